// embedrank's onnxruntime custom-op library (libembedrank_ort_ops.so): the op
// ai.embedrank::Attention, which replaces the unfused attention core of an encoder graph
// (Reshape/Transpose of Q, K, V, MatMul, scale, additive mask, Softmax, MatMul, Transpose,
// Reshape; see embedrank/native_attention.py) with one kernel (attention.h).
//
//   inputs:  query, key, value  float32 [batch, tokens, heads * head_dim]
//            attention_mask     int64   [batch, tokens] (nonzero = attended key)
//            bias (optional)    float32 [1 or batch, heads, tokens, tokens], added to the scaled
//                               scores (MPNet's relative position bias)
//   attributes: head_dim (int; heads = hidden / head_dim), scale (float: multiplies q . k),
//               bf16_dots (int, optional, default 0: nonzero runs both products in bf16 where
//               the CPU has AVX512-BF16; see core/attention.h)
//   output:  float32 [batch, tokens, heads * head_dim]
//
// Work is split into (sequence, head) tasks and run on the session's own intra-op thread pool
// (KernelContext_ParallelFor), so the op adds no threads of its own to the process.
#include <atomic>
#include <cstring>
#include <exception>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#include "core/attention.h"
#include "core/dispatch.h"
#include "ort/ort_api.h"

namespace {

using namespace embedrank;
namespace ort = embedrank::ort;

const ort::Api* g_api = nullptr;

struct AttentionKernel {
  int64_t head_dim = 0;
  float scale = 1.0f;
  int64_t bf16_dots = 0;  // optional attribute: nonzero = AttentionProblem::bf16_dots
};

// A failed call's status is passed on unchanged.
#define RETURN_IF_ERROR(expr)              \
  do {                                     \
    if (ort::Status* status_ = (expr)) return status_; \
  } while (0)

ort::Status* invalid(const std::string& message) {
  return g_api->create_status(ort::kInvalidArgument, ("embedrank Attention: " + message).c_str());
}

ort::Status* shape_of(const ort::Value* value, int& element_type, std::vector<int64_t>& dims) {
  ort::TensorTypeAndShapeInfo* info = nullptr;
  RETURN_IF_ERROR(g_api->tensor_type_and_shape(value, &info));
  size_t rank = 0;
  ort::Status* status = g_api->tensor_element_type(info, &element_type);
  if (!status) status = g_api->dimensions_count(info, &rank);
  if (!status) {
    dims.assign(rank, 0);
    status = g_api->dimensions(info, dims.data(), rank);
  }
  g_api->release_tensor_type_and_shape(info);
  return status;
}

std::string shape_text(const std::vector<int64_t>& dims) {
  std::string text = "[";
  for (size_t i = 0; i < dims.size(); ++i) text += (i ? ", " : "") + std::to_string(dims[i]);
  return text + "]";
}

struct ParallelJob {
  const AttentionProblem* problem;
  std::atomic<bool> failed{false};
};

void run_task(void* data, size_t task) {
  auto* job = static_cast<ParallelJob*>(data);
  thread_local AttentionScratch scratch;
  try {
    attention_task(*job->problem, task, scratch);
  } catch (...) {  // only std::bad_alloc can get here: no exception may cross into onnxruntime
    job->failed = true;
  }
}

ort::Status* compute_unguarded(void* kernel_data, ort::KernelContext* context) {
  if (!kernel_data) return invalid("the kernel was not created");
  const auto& kernel = *static_cast<const AttentionKernel*>(kernel_data);
  const ort::Value* inputs[4];
  std::vector<int64_t> dims[4];
  const char* names[4] = {"query", "key", "value", "attention_mask"};
  for (size_t i = 0; i < 4; ++i) {
    RETURN_IF_ERROR(g_api->input(context, i, &inputs[i]));
    if (!inputs[i]) return invalid(std::string(names[i]) + " is missing");
    int type = 0;
    RETURN_IF_ERROR(shape_of(inputs[i], type, dims[i]));
    if (type != (i == 3 ? ort::kInt64 : ort::kFloat))
      return invalid(std::string(names[i]) + (i == 3 ? " must be int64" : " must be float32"));
  }
  const std::vector<int64_t>& shape = dims[0];
  if (shape.size() != 3) return invalid("query must be [batch, tokens, hidden], got " + shape_text(shape));
  for (size_t i = 1; i < 3; ++i)
    if (dims[i] != shape)
      return invalid(std::string(names[i]) + " has shape " + shape_text(dims[i]) + ", query has " + shape_text(shape));
  if (dims[3] != std::vector<int64_t>{shape[0], shape[1]})
    return invalid("attention_mask has shape " + shape_text(dims[3]) + ", expected [" + std::to_string(shape[0]) +
                   ", " + std::to_string(shape[1]) + "]");
  if (shape[2] % kernel.head_dim != 0)
    return invalid("hidden size " + std::to_string(shape[2]) + " is not a multiple of head_dim=" +
                   std::to_string(kernel.head_dim));
  const int64_t heads = shape[2] / kernel.head_dim;
  size_t n_inputs = 0;
  RETURN_IF_ERROR(g_api->input_count(context, &n_inputs));
  const ort::Value* bias = nullptr;
  std::vector<int64_t> bias_dims;
  if (n_inputs > 4) RETURN_IF_ERROR(g_api->input(context, 4, &bias));
  if (bias) {
    int type = 0;
    RETURN_IF_ERROR(shape_of(bias, type, bias_dims));
    if (type != ort::kFloat) return invalid("bias must be float32");
    if (bias_dims.size() != 4 || (bias_dims[0] != 1 && bias_dims[0] != shape[0]) || bias_dims[1] != heads ||
        bias_dims[2] != shape[1] || bias_dims[3] != shape[1])
      return invalid("bias has shape " + shape_text(bias_dims) + ", expected [1 or " + std::to_string(shape[0]) +
                     ", " + std::to_string(heads) + ", " + std::to_string(shape[1]) + ", " + std::to_string(shape[1]) +
                     "]");
  }

  ort::Value* output = nullptr;
  RETURN_IF_ERROR(g_api->output(context, 0, shape.data(), shape.size(), &output));
  void* data[5];
  for (size_t i = 0; i < 4; ++i) RETURN_IF_ERROR(g_api->tensor_mutable_data(const_cast<ort::Value*>(inputs[i]), &data[i]));
  RETURN_IF_ERROR(g_api->tensor_mutable_data(output, &data[4]));

  AttentionProblem p;
  p.q = static_cast<const float*>(data[0]);
  p.k = static_cast<const float*>(data[1]);
  p.v = static_cast<const float*>(data[2]);
  p.mask = static_cast<const int64_t*>(data[3]);
  p.out = static_cast<float*>(data[4]);
  p.batch = static_cast<size_t>(shape[0]);
  p.tokens = static_cast<size_t>(shape[1]);
  p.head_dim = static_cast<size_t>(kernel.head_dim);
  p.heads = static_cast<size_t>(heads);
  p.scale = kernel.scale;
  p.bf16_dots = kernel.bf16_dots != 0;
  if (bias) {
    void* bias_data = nullptr;
    RETURN_IF_ERROR(g_api->tensor_mutable_data(const_cast<ort::Value*>(bias), &bias_data));
    p.bias = static_cast<const float*>(bias_data);
    p.bias_batch = static_cast<size_t>(bias_dims[0]);
  }
  try {
    check_attention_problem(p);
  } catch (const std::exception& error) {
    return invalid(error.what());
  }
  if (p.batch == 0 || p.tokens == 0) return nullptr;
  ParallelJob job{&p};
  RETURN_IF_ERROR(g_api->parallel_for(context, run_task, attention_task_count(p), 0, &job));
  if (job.failed) return g_api->create_status(ort::kFail, "embedrank Attention: out of memory");
  return nullptr;
}

ort::Status* create_kernel_unguarded(const ort::KernelInfo* info, void** out) {
  auto* kernel = new (std::nothrow) AttentionKernel;
  if (!kernel) return g_api->create_status(ort::kFail, "embedrank Attention: out of memory");
  ort::Status* status = g_api->attribute_int64(info, "head_dim", &kernel->head_dim);
  if (!status) status = g_api->attribute_float(info, "scale", &kernel->scale);
  if (!status) {  // bf16_dots is optional: a graph without it runs the fp32 products
    if (ort::Status* missing = g_api->attribute_int64(info, "bf16_dots", &kernel->bf16_dots)) {
      g_api->release_status(missing);
      kernel->bf16_dots = 0;
    }
  }
  if (!status && kernel->head_dim < 1)
    status = invalid("head_dim must be >= 1, got " + std::to_string(kernel->head_dim));
  if (status) {
    delete kernel;
    return status;
  }
  *out = kernel;
  return nullptr;
}

// No C++ exception may cross into onnxruntime (only std::bad_alloc can be thrown here).
ort::Status* compute(void* kernel_data, ort::KernelContext* context) {
  try {
    return compute_unguarded(kernel_data, context);
  } catch (...) {
    return g_api->create_status(ort::kFail, "embedrank Attention: out of memory");
  }
}

ort::Status* create_kernel(const ort::CustomOp*, ort::ApiTable, const ort::KernelInfo* info, void** out) {
  try {
    return create_kernel_unguarded(info, out);
  } catch (...) {
    return g_api->create_status(ort::kFail, "embedrank Attention: out of memory");
  }
}

const char* op_name(const ort::CustomOp*) { return "Attention"; }
const char* op_provider(const ort::CustomOp*) { return "CPUExecutionProvider"; }
int input_type(const ort::CustomOp*, size_t index) { return index == 3 ? ort::kInt64 : ort::kFloat; }
size_t input_count(const ort::CustomOp*) { return 5; }
int output_type(const ort::CustomOp*, size_t) { return ort::kFloat; }
size_t output_count(const ort::CustomOp*) { return 1; }
void destroy_kernel(void* kernel) { delete static_cast<AttentionKernel*>(kernel); }
int required(const ort::CustomOp*, size_t) { return ort::kRequired; }
int input_characteristic(const ort::CustomOp*, size_t index) { return index == 4 ? ort::kOptional : ort::kRequired; }
int default_memory(const ort::CustomOp*, size_t) { return ort::kMemTypeDefault; }
int one(const ort::CustomOp*) { return 1; }

ort::CustomOp make_attention_op() {
  ort::CustomOp op;
  std::memset(&op, 0, sizeof(op));
  op.version = ort::kCustomOpVersion;
  op.GetName = op_name;
  op.GetExecutionProviderType = op_provider;
  op.GetInputType = input_type;
  op.GetInputTypeCount = input_count;
  op.GetOutputType = output_type;
  op.GetOutputTypeCount = output_count;
  op.KernelDestroy = destroy_kernel;
  op.GetInputCharacteristic = input_characteristic;
  op.GetOutputCharacteristic = required;
  op.GetInputMemoryType = default_memory;
  op.GetVariadicInputMinArity = one;
  op.GetVariadicInputHomogeneity = one;
  op.GetVariadicOutputMinArity = one;
  op.GetVariadicOutputHomogeneity = one;
  // CreateKernel and KernelCompute stay null: for version >= 16 onnxruntime calls the V2 entries.
  op.CreateKernelV2 = create_kernel;
  op.KernelComputeV2 = compute;
  return op;
}

ort::CustomOp g_attention_op = make_attention_op();

ort::Status* register_ops(ort::SessionOptions* options, ort::ApiTable table) {
  static std::mutex mutex;
  static ort::Api api(table);
  static ort::CustomOpDomain* domain = nullptr;
  std::lock_guard<std::mutex> lock(mutex);
  if (!g_api) {
    g_api = &api;
    // EMBEDRANK_ISA lowers the kernel's ISA level here too, as it does for embedrank._kernels.
    try {
      apply_environment();
    } catch (const std::exception& error) {
      g_api = nullptr;
      return api.create_status(ort::kInvalidArgument, error.what());
    }
  }
  if (!domain) {
    ort::CustomOpDomain* created = nullptr;
    RETURN_IF_ERROR(g_api->create_custom_op_domain("ai.embedrank", &created));
    RETURN_IF_ERROR(g_api->custom_op_domain_add(created, &g_attention_op));
    domain = created;
  }
  return g_api->add_custom_op_domain(options, domain);
}

}  // namespace

// Called by onnxruntime's SessionOptions.register_custom_ops_library, once per session options.
// The domain (with its op) is made once and lives as long as the process: sessions keep
// pointing at it.
extern "C" __attribute__((visibility("default"))) ort::Status* RegisterCustomOps(ort::SessionOptions* options,
                                                                                 const ort::ApiBase* base) {
  ort::ApiTable table = base->GetApi(ort::kApiVersion);
  if (!table) {
    ort::Api v1(base->GetApi(1));
    return v1.create_status(ort::kFail, "embedrank's custom ops need onnxruntime >= 1.17 (C API version 17)");
  }
  try {
    return register_ops(options, table);
  } catch (...) {
    return ort::Api(table).create_status(ort::kFail, "embedrank: registering the custom ops failed");
  }
}
