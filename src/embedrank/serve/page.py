"""The search page served at GET /: a query box, hits with scores and passages, timings."""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>embedrank search</title>
<style>
 body { font-family: system-ui, sans-serif; max-width: 52rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
 form { display: flex; gap: .5rem; flex-wrap: wrap; }
 input[type=search] { flex: 1; min-width: 16rem; padding: .5rem; font-size: 1rem; }
 button { padding: .5rem 1rem; font-size: 1rem; }
 #key { width: 12rem; padding: .5rem; }
 .hit { border-bottom: 1px solid #ddd; padding: .75rem 0; }
 .hit .id { font-weight: 600; } .hit .score { color: #666; margin-left: .5rem; font-variant-numeric: tabular-nums; }
 .hit p { margin: .35rem 0 0; line-height: 1.4; }
 #timings, #error { color: #666; margin: 1rem 0; } #error { color: #a00; }
</style>
</head>
<body>
<h1>embedrank search</h1>
<form id="search">
  <input type="search" id="query" name="query" placeholder="Ask something" required autofocus>
  <input type="password" id="key" placeholder="API key (if the server has one)">
  <label><input type="checkbox" id="rerank"> rerank</label>
  <button type="submit">Search</button>
</form>
<div id="error" role="alert"></div>
<div id="timings"></div>
<div id="hits"></div>
<script>
const form = document.getElementById("search");
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const query = document.getElementById("query").value;
  const key = document.getElementById("key").value;
  const body = {query: query, top_k: 10};
  if (document.getElementById("rerank").checked) body.rerank = true;
  const headers = {"Content-Type": "application/json"};
  if (key) headers["Authorization"] = "Bearer " + key;
  const hits = document.getElementById("hits"), error = document.getElementById("error");
  const timings = document.getElementById("timings");
  hits.replaceChildren(); error.textContent = ""; timings.textContent = "searching...";
  const response = await fetch("/search", {method: "POST", headers: headers, body: JSON.stringify(body)});
  const data = await response.json();
  if (!response.ok) { timings.textContent = ""; error.textContent = data.error.message; return; }
  const t = data.timings_ms;
  timings.textContent = `${data.hits.length} hits in ${t.request.toFixed(1)} ms ` +
    `(encode ${t.encode.toFixed(1)}, search ${t.search.toFixed(1)}, rerank ${t.rerank.toFixed(1)})`;
  for (const hit of data.hits) {
    const div = document.createElement("div"); div.className = "hit";
    const id = document.createElement("span"); id.className = "id"; id.textContent = hit.doc_id;
    const score = document.createElement("span"); score.className = "score"; score.textContent = hit.score.toFixed(4);
    const passage = document.createElement("p"); passage.textContent = hit.passage;
    div.append(id, score, passage); hits.append(div);
  }
});
</script>
</body>
</html>
"""
