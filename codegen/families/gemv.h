// Family gemv (kernels/gemv.cuh): the small-batch GEMM out[M, N] = a[M, K]·w[N, K]ᵀ (+ bias[N])
// (+ residual[M, N]) for M <= kGemvMaxRows token rows, streaming the weights once. A matmul that
// takes this path keeps its cuBLASLt PlanGemm too: the GEMV launch carries the step bound
// M <= kGemvMaxRows and the PlanGemm M >= kGemvMaxRows + 1, so each step runs exactly one
// (plan/plan.h StepBound).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "codegen/families/family.h"

namespace kiln {

/// The most token rows one GEMV launch handles (two 8-column mma tiles).
inline constexpr int64_t kGemvMaxRows = 16;

struct GemvSpec final : KernelSpec {
  DType dtype = DType::kBF16;       // a and w
  DType out_dtype = DType::kBF16;   // out and residual
  DType bias_dtype = DType::kBF16;  // read only with `bias`
  int64_t n = 0, k = 0;             // weight [N, K]; K % 8 == 0
  int64_t row_tiles = 1;            // 16-feature tiles per block
  int64_t warps = 8;                // warps per block, splitting K
  int64_t unroll = 4;               // 32-element K chunks whose loads are in flight at once
  bool bias = false, residual = false;
  /// The SwiGLU epilogue: w is a merged [gate; up] weight of N = 2F rows and the kernel writes
  /// silu(gate)·up, [m, F] (row_tiles even, no bias or residual).
  bool swiglu = false;
  /// Software pipelining: the next UNROLL chunks load while these are multiplied (twice the
  /// registers for the weights in flight).
  bool prefetch = false;
  /// The RMSNorm prologue: `a` is the norm's input, normalized in the kernel with `norm_w` [K]
  /// (of `dtype`) and `eps` (entry parameters after m).
  bool norm = false;

  KernelFamily family() const override { return KernelFamily::kGemv; }
  /// gemv_<dt>_n<N>_k<K>_rt<r>_w<w>_u<u>[_bias][_res][_swiglu][_pf][_norm][_out<dt>][_b<dt>]
  std::string key() const override;
  /// out, a, w[, bias][, residual], m[, norm_w, eps]
  std::vector<EntryDecl> entry() const override;
  absl::StatusOr<KernelTemplate> kernel_template() const override;

  int64_t threads() const { return warps * 32; }
  /// The output features per block: 16·row_tiles (SwiGLU: half, the other half are up rows).
  int64_t features_per_block() const { return swiglu ? 8 * row_tiles : 16 * row_tiles; }
  /// The launch: grid cdiv(output features, features_per_block()), one block of `threads()`.
  LaunchRule rule() const;
};

/// Why a GEMM cannot take the GEMV path (dtypes, K % 8), or nullopt when it can.
std::optional<std::string> gemv_ineligible(DType a, DType b, DType out, DType bias, bool has_bias,
                                           int64_t n, int64_t k);

/// Whether the GEMV kernel implements `epilogue` (a switch without default: a new GemmEpilogue,
/// e.g. a SwiGLU one, fails to compile here until it is decided, instead of running as none).
bool gemv_supports_epilogue(GemmEpilogue epilogue);

/// The block shape for an [N, K] weight: enough 16-byte loads in flight per SM to cover HBM
/// latency (~128 bytes per lane), and enough blocks to fill 132 SMs.
GemvSpec gemv_spec_for(int64_t n, int64_t k, bool swiglu = false);

/// Which path a matmul takes at M <= kGemvMaxRows.
enum class GemvChoice : uint8_t {
  kHeuristic,  ///< gemv_heuristic(n, k)
  kCublas,     ///< always cuBLASLt
  kGemv,       ///< the GEMV kernel whenever eligible
};

/// The default until a timed pick per shape (runtime/cuda/gemm_timing.h) is wired into `--tune`:
/// the GEMV for weights under 8 Mi elements (16 MB of bf16), cuBLASLt from there up. Measured on
/// an H200 at M = 1 (bench/results/2026-12-03-h200-decode-gemv-serve-fix.md): kiln's GEMV beats
/// cuBLASLt on every SmolLM2 projection (up to 1.6x) and on Llama-3.2-1B's qkv and o (6.3 and
/// 4.2 Mi elements), while cuBLASLt wins on the larger ones (1B gate/up/down, 8B qkv/gate/up/down,
/// the LM heads) by 5-40%; 8B's o (16 Mi) is the exception, 4% faster on the GEMV at M = 1 only. (The first default, the GEMV from 1 Mi elements up, had it backwards.)
bool gemv_heuristic(int64_t n, int64_t k);

/// The typed compile option: a default and explicit per-shape choices (what a tuner writes).
struct GemvOptions {
  GemvChoice default_choice = GemvChoice::kHeuristic;
  struct ShapeChoice {
    int64_t n = 0, k = 0;
    GemvChoice choice = GemvChoice::kHeuristic;
  };
  std::vector<ShapeChoice> per_shape;  ///< first match on (n, k) wins over default_choice

  /// Whether an eligible [N, K] GEMM takes the GEMV path for small M.
  bool use_gemv(int64_t n, int64_t k) const;
};

/// fuse-horizontal's merged gate/up GEMM and the SwiGLU after it, which the GEMV computes in its
/// epilogue (GemvSpec::swiglu) at M <= kGemvMaxRows: a matmul (or a gemm with no epilogue)
/// x[T, K]·w[2F, K]ᵀ whose result is read only by its strided-rows slices [:, 0:F] (gate) and
/// [:, F:2F] (up), both read only by one fused_elementwise mul(silu(gate), up) of the same dtype.
/// The elementwise node keeps its launch for M > kGemvMaxRows (after the cuBLASLt GEMM).
struct SwigluGemm {
  const Node* gemm = nullptr;         ///< [T, 2F]
  const Node* elementwise = nullptr;  ///< [T, F]
};
/// The match that `node` is either part of (the GEMM or the elementwise node), or nullopt.
std::optional<SwigluGemm> match_swiglu_gemm(const Graph& graph, const Node& node);

/// A plain rmsnorm whose only reader is a GEMM taking its result as x, which the GEMV computes
/// in its prologue (GemvSpec::norm) at M <= kGemvMaxRows from the norm's input. The norm's input
/// must stay live through the GEMM without help from plan-memory: it is a graph input or param,
/// or is read again after the GEMM (the residual stream, which the next residual add reads). The
/// rmsnorm node keeps its launch for M > kGemvMaxRows (before the cuBLASLt GEMM).
struct NormGemm {
  const Node* norm = nullptr;
  const Node* gemm = nullptr;
};
/// The match that `node` is either part of (the rmsnorm or the GEMM), or nullopt.
std::optional<NormGemm> match_norm_gemm(const Graph& graph, const Node& node);

/// What a GEMV launch computes besides its GEMM, as value names.
struct GemvFusion {
  /// A SwigluGemm's elementwise result: the launch writes silu(gate)·up there instead of the
  /// GEMM's own result.
  std::optional<std::string> swiglu_out;
  /// A NormGemm's norm: the launch reads its input `x` instead of the GEMM's `a` and normalizes.
  struct Norm {
    std::string x, weight;
    double eps = 0;
  };
  std::optional<Norm> norm;
};

/// Adds the GEMV launch for `gemm` (its operands are value names, as the PlanGemm holds them),
/// bounded to steps with M <= kGemvMaxRows; the caller bounds the PlanGemm to the rest.
absl::Status lower_gemv(const PlanGemm& gemm, DType bias_dtype, LoweringContext& ctx,
                        const GemvFusion& fusion = {});

}  // namespace kiln
