// cuBLASLt through dlopen (see gemm.h). cublasLt.h supplies types only: nothing links against
// libcublasLt, and without the header (no toolkit at build time) create() reports Unavailable.
#include "runtime/cuda/gemm.h"

#include <dlfcn.h>

#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

#if __has_include(<cublasLt.h>)
#include <cublasLt.h>
#define KILN_HAVE_CUBLASLT_H 1
#endif

namespace kiln {

std::string GemmShape::describe() const {
  static constexpr const char* kEpilogue[] = {"none", "bias", "residual", "bias+residual"};
  return absl::StrFormat("gemm M=%d N=%d K=%d %s·%s->%s epilogue %s", m, n, k, dtype_name(a_dtype),
                         dtype_name(b_dtype), dtype_name(out_dtype),
                         kEpilogue[static_cast<int>(epilogue)]);
}

#ifdef KILN_HAVE_CUBLASLT_H

struct CublasLtApi {
  cublasStatus_t (*create)(cublasLtHandle_t*) = nullptr;
  cublasStatus_t (*destroy)(cublasLtHandle_t) = nullptr;
  const char* (*status_string)(cublasStatus_t) = nullptr;
  cublasStatus_t (*desc_create)(cublasLtMatmulDesc_t*, cublasComputeType_t,
                                cudaDataType_t) = nullptr;
  cublasStatus_t (*desc_destroy)(cublasLtMatmulDesc_t) = nullptr;
  cublasStatus_t (*desc_set)(cublasLtMatmulDesc_t, cublasLtMatmulDescAttributes_t, const void*,
                             size_t) = nullptr;
  cublasStatus_t (*layout_create)(cublasLtMatrixLayout_t*, cudaDataType, uint64_t, uint64_t,
                                  int64_t) = nullptr;
  cublasStatus_t (*layout_destroy)(cublasLtMatrixLayout_t) = nullptr;
  cublasStatus_t (*pref_create)(cublasLtMatmulPreference_t*) = nullptr;
  cublasStatus_t (*pref_destroy)(cublasLtMatmulPreference_t) = nullptr;
  cublasStatus_t (*pref_set)(cublasLtMatmulPreference_t, cublasLtMatmulPreferenceAttributes_t,
                             const void*, size_t) = nullptr;
  cublasStatus_t (*heuristic)(cublasLtHandle_t, cublasLtMatmulDesc_t, cublasLtMatrixLayout_t,
                              cublasLtMatrixLayout_t, cublasLtMatrixLayout_t,
                              cublasLtMatrixLayout_t, cublasLtMatmulPreference_t, int,
                              cublasLtMatmulHeuristicResult_t*, int*) = nullptr;
  cublasStatus_t (*matmul)(cublasLtHandle_t, cublasLtMatmulDesc_t, const void*, const void*,
                           cublasLtMatrixLayout_t, const void*, cublasLtMatrixLayout_t, const void*,
                           const void*, cublasLtMatrixLayout_t, void*, cublasLtMatrixLayout_t,
                           const cublasLtMatmulAlgo_t*, void*, size_t, cudaStream_t) = nullptr;
};

namespace {

absl::Status check(const CublasLtApi& api, cublasStatus_t s, const char* call) {
  if (s == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(
      absl::StrCat(call, " failed: ", api.status_string ? api.status_string(s) : "cuBLAS error",
                   " (status ", static_cast<int>(s), ")"));
}

absl::StatusOr<std::shared_ptr<const CublasLtApi>> load_cublaslt() {
  void* lib = dlopen("libcublasLt.so.13", RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    return absl::UnavailableError(absl::StrCat(
        "cuBLASLt not found (dlopen libcublasLt.so.13: ", dlerror(),
        "); install the CUDA 13 toolkit's libcublas or add its lib64 folder to LD_LIBRARY_PATH"));
  }
  auto api = std::make_shared<CublasLtApi>();
  const char* missing = nullptr;
  auto need = [&](auto& fn, const char* symbol) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(lib, symbol));
    if (fn == nullptr && missing == nullptr) missing = symbol;
  };
  need(api->create, "cublasLtCreate");
  need(api->destroy, "cublasLtDestroy");
  need(api->status_string, "cublasLtGetStatusString");
  need(api->desc_create, "cublasLtMatmulDescCreate");
  need(api->desc_destroy, "cublasLtMatmulDescDestroy");
  need(api->desc_set, "cublasLtMatmulDescSetAttribute");
  need(api->layout_create, "cublasLtMatrixLayoutCreate");
  need(api->layout_destroy, "cublasLtMatrixLayoutDestroy");
  need(api->pref_create, "cublasLtMatmulPreferenceCreate");
  need(api->pref_destroy, "cublasLtMatmulPreferenceDestroy");
  need(api->pref_set, "cublasLtMatmulPreferenceSetAttribute");
  need(api->heuristic, "cublasLtMatmulAlgoGetHeuristic");
  need(api->matmul, "cublasLtMatmul");
  if (missing != nullptr) {
    return absl::UnavailableError(absl::StrCat("libcublasLt.so.13 has no ", missing));
  }
  return std::shared_ptr<const CublasLtApi>(std::move(api));
}

absl::StatusOr<std::shared_ptr<const CublasLtApi>> cublaslt() {
  static std::once_flag once;
  static absl::StatusOr<std::shared_ptr<const CublasLtApi>>* api = nullptr;
  std::call_once(
      once, [] { api = new absl::StatusOr<std::shared_ptr<const CublasLtApi>>(load_cublaslt()); });
  return *api;
}

absl::StatusOr<cudaDataType_t> cuda_type(DType dt) {
  switch (dt) {
    case DType::kBF16: return CUDA_R_16BF;
    case DType::kF16: return CUDA_R_16F;
    case DType::kF32: return CUDA_R_32F;
    default:
      return absl::UnimplementedError(
          absl::StrCat("cuBLASLt GEMMs take bf16, f16 or f32 operands, not ", dtype_name(dt)));
  }
}

}  // namespace

struct GemmRunner::ShapePlan {
  const CublasLtApi* api = nullptr;
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  ~ShapePlan() {
    if (desc) api->desc_destroy(desc);
    for (cublasLtMatrixLayout_t l : {a, b, c}) {
      if (l) api->layout_destroy(l);
    }
  }
};

absl::StatusOr<std::unique_ptr<GemmRunner>> GemmRunner::create(GpuDevice& device,
                                                               size_t workspace_bytes) {
  absl::StatusOr<std::shared_ptr<const CublasLtApi>> api = cublaslt();
  if (!api.ok()) return api.status();
  std::unique_ptr<GemmRunner> r(new GemmRunner());
  r->api_ = *api;
  r->device_ = &device;
  cublasLtHandle_t h = nullptr;
  if (absl::Status s = check(**api, (*api)->create(&h), "cublasLtCreate"); !s.ok()) return s;
  r->handle_ = h;
  absl::StatusOr<DeviceBuffer> ws = device.alloc(workspace_bytes);
  if (!ws.ok()) return ws.status();
  r->workspace_ = std::move(*ws);
  return r;
}

GemmRunner::~GemmRunner() {
  plans_.clear();
  if (api_ && handle_) api_->destroy(static_cast<cublasLtHandle_t>(handle_));
}

absl::StatusOr<GemmRunner::ShapePlan*> GemmRunner::plan_for(const GemmShape& s) {
  if (auto it = plans_.find(s); it != plans_.end()) return it->second.get();
  const CublasLtApi& api = *api_;
  absl::StatusOr<cudaDataType_t> ta = cuda_type(s.a_dtype), tb = cuda_type(s.b_dtype),
                                 to = cuda_type(s.out_dtype), tbias = cuda_type(s.bias_dtype);
  for (const auto* t : {&ta, &tb, &to, &tbias}) {
    if (!t->ok()) return t->status();
  }
  auto p = std::make_unique<ShapePlan>();
  p->api = &api;
  auto fail = [&](absl::Status st) {
    return absl::Status(st.code(), absl::StrCat(s.describe(), ": ", st.message()));
  };
  // Row-major out[M,N] = a[M,K]·b[N,K]ᵀ is column-major outᵀ[N,M] = bᵀᵀ·aᵀ: cuBLASLt's A is b
  // (stored K x N column-major, transposed), its B is a (K x M column-major), C/D are outᵀ with
  // ld N. The bias then runs along cuBLASLt's rows, which are the output features.
  if (absl::Status st = check(api, api.desc_create(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F),
                              "cublasLtMatmulDescCreate");
      !st.ok()) {
    return fail(st);
  }
  const cublasOperation_t trans = CUBLAS_OP_T, no = CUBLAS_OP_N;
  api.desc_set(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &trans, sizeof(trans));
  api.desc_set(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &no, sizeof(no));
  const bool bias = s.epilogue == GemmEpilogue::kBias || s.epilogue == GemmEpilogue::kBiasResidual;
  const cublasLtEpilogue_t epi = bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
  api.desc_set(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi));
  if (bias) {
    const cudaDataType_t bt = *tbias;
    api.desc_set(p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof(bt));
  }
  for (auto [layout, type, rows, cols] :
       {std::tuple{&p->a, *tb, s.k, s.n}, std::tuple{&p->b, *ta, s.k, s.m},
        std::tuple{&p->c, *to, s.n, s.m}}) {
    if (absl::Status st = check(api, api.layout_create(layout, type, rows, cols, rows),
                                "cublasLtMatrixLayoutCreate");
        !st.ok()) {
      return fail(st);
    }
  }
  cublasLtMatmulPreference_t pref = nullptr;
  if (absl::Status st = check(api, api.pref_create(&pref), "cublasLtMatmulPreferenceCreate");
      !st.ok()) {
    return fail(st);
  }
  const uint64_t ws = workspace_.bytes();
  api.pref_set(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  absl::Status st = check(api,
                          api.heuristic(static_cast<cublasLtHandle_t>(handle_), p->desc, p->a, p->b,
                                        p->c, p->c, pref, 1, &result, &found),
                          "cublasLtMatmulAlgoGetHeuristic");
  api.pref_destroy(pref);
  if (!st.ok()) return fail(st);
  if (found == 0) return fail(absl::UnimplementedError("cuBLASLt has no algorithm for it"));
  p->algo = result.algo;
  ShapePlan* raw = p.get();
  plans_.emplace(s, std::move(p));
  return raw;
}

absl::Status GemmRunner::run(const GemmShape& s, const GemmOperands& o, void* stream) {
  if (s.m == 0) return absl::OkStatus();
  absl::StatusOr<ShapePlan*> p = plan_for(s);
  if (!p.ok()) return p.status();
  const CublasLtApi& api = *api_;
  const bool bias = s.epilogue == GemmEpilogue::kBias || s.epilogue == GemmEpilogue::kBiasResidual;
  const bool residual =
      s.epilogue == GemmEpilogue::kResidual || s.epilogue == GemmEpilogue::kBiasResidual;
  if (bias) {
    const void* ptr = reinterpret_cast<const void*>(o.bias);
    api.desc_set((*p)->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &ptr, sizeof(ptr));
  }
  const float alpha = 1.0f, beta = residual ? 1.0f : 0.0f;
  const void* c = reinterpret_cast<const void*>(residual ? o.residual : o.out);
  absl::Status st = check(
      api,
      api.matmul(static_cast<cublasLtHandle_t>(handle_), (*p)->desc, &alpha,
                 reinterpret_cast<const void*>(o.b), (*p)->a, reinterpret_cast<const void*>(o.a),
                 (*p)->b, &beta, c, (*p)->c, reinterpret_cast<void*>(o.out), (*p)->c, &(*p)->algo,
                 reinterpret_cast<void*>(workspace_.ptr()), workspace_.bytes(),
                 static_cast<cudaStream_t>(stream ? stream : device_->stream())),
      "cublasLtMatmul");
  if (!st.ok()) return absl::Status(st.code(), absl::StrCat(s.describe(), ": ", st.message()));
  return absl::OkStatus();
}

#else  // no cublasLt.h at build time

struct CublasLtApi {};
struct GemmRunner::ShapePlan {};
absl::StatusOr<std::unique_ptr<GemmRunner>> GemmRunner::create(GpuDevice&, size_t) {
  return absl::UnavailableError("kiln was built without the CUDA toolkit's cublasLt.h");
}
GemmRunner::~GemmRunner() = default;
absl::StatusOr<GemmRunner::ShapePlan*> GemmRunner::plan_for(const GemmShape&) {
  return absl::UnavailableError("kiln was built without cublasLt.h");
}
absl::Status GemmRunner::run(const GemmShape&, const GemmOperands&, void*) {
  return absl::UnavailableError("kiln was built without cublasLt.h");
}

#endif  // KILN_HAVE_CUBLASLT_H

}  // namespace kiln
