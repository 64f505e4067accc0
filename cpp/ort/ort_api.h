// The slice of onnxruntime's C API that embedrank's custom-op library uses.
//
// onnxruntime hands a custom-op library an OrtApiBase; GetApi(version) returns a table of
// function pointers whose order is frozen per API version (new entries only ever go at the
// end). The onnxruntime wheel ships no C headers, so the entries used here are declared by
// their slot in that table, with their documented signatures. Slot numbers were checked
// against onnxruntime's public API table (version 1 ends at slot 101,
// ReleaseCustomOpDomain; KernelContext_ParallelFor is slot 274, API version 17).
#pragma once

#include <cstddef>
#include <cstdint>

namespace embedrank::ort {

struct Status;  // OrtStatus
struct KernelContext;
struct KernelInfo;
struct Value;
struct TensorTypeAndShapeInfo;
struct SessionOptions;
struct CustomOpDomain;

using ApiTable = const void* const*;

struct ApiBase {  // OrtApiBase
  ApiTable (*GetApi)(uint32_t version);
  const char* (*GetVersionString)();
};

// The API version whose table is requested: KernelContext_ParallelFor needs 17 (onnxruntime 1.17).
constexpr uint32_t kApiVersion = 17;

enum ErrorCode : int { kOk = 0, kFail = 1, kInvalidArgument = 2 };
enum ElementType : int { kFloat = 1, kInt64 = 7 };  // ONNXTensorElementDataType

// Typed accessors for the slots used.
class Api {
 public:
  explicit Api(ApiTable table) : table_(table) {}

  Status* create_status(ErrorCode code, const char* message) const {
    return call<Status* (*)(int, const char*)>(0)(code, message);
  }
  Status* create_custom_op_domain(const char* name, CustomOpDomain** out) const {
    return call<Status* (*)(const char*, CustomOpDomain**)>(26)(name, out);
  }
  Status* custom_op_domain_add(CustomOpDomain* domain, const void* op) const {
    return call<Status* (*)(CustomOpDomain*, const void*)>(27)(domain, op);
  }
  Status* add_custom_op_domain(SessionOptions* options, CustomOpDomain* domain) const {
    return call<Status* (*)(SessionOptions*, CustomOpDomain*)>(28)(options, domain);
  }
  Status* tensor_mutable_data(Value* value, void** out) const {
    return call<Status* (*)(Value*, void**)>(51)(value, out);
  }
  Status* tensor_element_type(const TensorTypeAndShapeInfo* info, int* out) const {
    return call<Status* (*)(const TensorTypeAndShapeInfo*, int*)>(60)(info, out);
  }
  Status* dimensions_count(const TensorTypeAndShapeInfo* info, size_t* out) const {
    return call<Status* (*)(const TensorTypeAndShapeInfo*, size_t*)>(61)(info, out);
  }
  Status* dimensions(const TensorTypeAndShapeInfo* info, int64_t* values, size_t count) const {
    return call<Status* (*)(const TensorTypeAndShapeInfo*, int64_t*, size_t)>(62)(info, values, count);
  }
  Status* tensor_type_and_shape(const Value* value, TensorTypeAndShapeInfo** out) const {
    return call<Status* (*)(const Value*, TensorTypeAndShapeInfo**)>(65)(value, out);
  }
  Status* attribute_float(const KernelInfo* info, const char* name, float* out) const {
    return call<Status* (*)(const KernelInfo*, const char*, float*)>(85)(info, name, out);
  }
  Status* attribute_int64(const KernelInfo* info, const char* name, int64_t* out) const {
    return call<Status* (*)(const KernelInfo*, const char*, int64_t*)>(86)(info, name, out);
  }
  Status* input_count(const KernelContext* context, size_t* out) const {
    return call<Status* (*)(const KernelContext*, size_t*)>(88)(context, out);
  }
  Status* input(const KernelContext* context, size_t index, const Value** out) const {
    return call<Status* (*)(const KernelContext*, size_t, const Value**)>(90)(context, index, out);
  }
  Status* output(KernelContext* context, size_t index, const int64_t* dims, size_t count, Value** out) const {
    return call<Status* (*)(KernelContext*, size_t, const int64_t*, size_t, Value**)>(91)(context, index, dims, count, out);
  }
  void release_status(Status* status) const { call<void (*)(Status*)>(93)(status); }
  void release_tensor_type_and_shape(TensorTypeAndShapeInfo* info) const {
    call<void (*)(TensorTypeAndShapeInfo*)>(99)(info);
  }
  Status* parallel_for(const KernelContext* context, void (*fn)(void*, size_t), size_t total, size_t batches,
                       void* data) const {
    return call<Status* (*)(const KernelContext*, void (*)(void*, size_t), size_t, size_t, void*)>(274)(
        context, fn, total, batches, data);
  }

 private:
  template <typename Fn>
  Fn call(size_t slot) const {
    return reinterpret_cast<Fn>(const_cast<void*>(table_[slot]));
  }
  ApiTable table_;
};

enum InputOutputCharacteristic : int { kRequired = 0, kOptional = 1 };
enum MemType : int { kMemTypeDefault = 0 };

// OrtCustomOp, version 16 layout: every entry is read by onnxruntime up to KernelComputeV2.
struct CustomOp {
  uint32_t version;
  void* (*CreateKernel)(const CustomOp*, ApiTable, const KernelInfo*);
  const char* (*GetName)(const CustomOp*);
  const char* (*GetExecutionProviderType)(const CustomOp*);
  int (*GetInputType)(const CustomOp*, size_t);
  size_t (*GetInputTypeCount)(const CustomOp*);
  int (*GetOutputType)(const CustomOp*, size_t);
  size_t (*GetOutputTypeCount)(const CustomOp*);
  void (*KernelCompute)(void*, KernelContext*);
  void (*KernelDestroy)(void*);
  int (*GetInputCharacteristic)(const CustomOp*, size_t);
  int (*GetOutputCharacteristic)(const CustomOp*, size_t);
  int (*GetInputMemoryType)(const CustomOp*, size_t);
  int (*GetVariadicInputMinArity)(const CustomOp*);
  int (*GetVariadicInputHomogeneity)(const CustomOp*);
  int (*GetVariadicOutputMinArity)(const CustomOp*);
  int (*GetVariadicOutputHomogeneity)(const CustomOp*);
  Status* (*CreateKernelV2)(const CustomOp*, ApiTable, const KernelInfo*, void**);
  Status* (*KernelComputeV2)(void*, KernelContext*);
  // Later versions append more entries; version 16 tells onnxruntime not to read them, and
  // they are zeroed here all the same.
  void* later_entries[8];
};
constexpr uint32_t kCustomOpVersion = 16;

}  // namespace embedrank::ort
