// Family gemv (see gemv.h).
#include "codegen/families/gemv.h"

#include "absl/strings/str_cat.h"
#include "codegen/kernel_source.h"

namespace kiln {

std::string GemvSpec::key() const {
  std::vector<std::string> tags;
  if (bias) tags.push_back("bias");
  if (residual) tags.push_back("res");
  if (out_dtype != dtype) tags.push_back(absl::StrCat("out", dtype_name(out_dtype)));
  if (bias && bias_dtype != dtype) tags.push_back(absl::StrCat("b", dtype_name(bias_dtype)));
  return spec_key(
      family(), dtype,
      {{"n", n}, {"k", k}, {"rt", row_tiles}, {"w", warps}, {"u", unroll}}, tags);
}

std::vector<EntryDecl> GemvSpec::entry() const {
  std::vector<EntryDecl> e = {
      {"kiln_out_t*", "out"}, {"const kiln_t*", "a"}, {"const kiln_t*", "w"}};
  if (bias) e.push_back({"const kiln_bias_t*", "bias"});
  if (residual) e.push_back({"const kiln_out_t*", "residual"});
  e.push_back({"int", "m"});
  return e;
}

absl::StatusOr<std::string> GemvSpec::source() const {
  if (std::optional<std::string> why =
          gemv_ineligible(dtype, dtype, out_dtype, bias_dtype, bias, n, k)) {
    return absl::InvalidArgumentError(*why);
  }
  absl::StatusOr<std::string> out_t = kernel_type_name(out_dtype);
  absl::StatusOr<std::string> bias_t = kernel_type_name(bias ? bias_dtype : dtype);
  if (!out_t.ok()) return out_t.status();
  if (!bias_t.ok()) return bias_t.status();
  const std::string config =
      absl::StrCat("typedef ", *out_t, " kiln_out_t;\ntypedef ", *bias_t, " kiln_bias_t;\n");
  const std::string call = absl::StrCat(
      "kiln_k::gemv<kiln_t, kiln_out_t, kiln_bias_t, ", n, ", ", k, ", ", row_tiles, ", ", warps,
      ", ", unroll, ", ", bias ? "true" : "false", ", ", residual ? "true" : "false", ">");
  const std::string args = absl::StrCat("out, a, w, ", bias ? "bias" : "nullptr", ", ",
                                        residual ? "residual" : "nullptr", ", m");
  return instantiate(*this, "gemv.cuh", dtype, config, threads(), call, args);
}

LaunchRule GemvSpec::rule() const {
  const int64_t rows = 16 * row_tiles;
  return rule_1d(absl::StrCat((n + rows - 1) / rows), threads());
}

std::optional<std::string> gemv_ineligible(DType a, DType b, DType out, DType bias, bool has_bias,
                                           int64_t n, int64_t k) {
  auto half = [](DType d) { return d == DType::kBF16 || d == DType::kF16; };
  if (!half(a) || a != b) {
    return absl::StrCat("the GEMV takes bf16·bf16 or f16·f16, not ", dtype_name(a), "·",
                        dtype_name(b));
  }
  if (!half(out) && out != DType::kF32) {
    return absl::StrCat("the GEMV writes bf16, f16 or f32, not ", dtype_name(out));
  }
  if (has_bias && !half(bias) && bias != DType::kF32) {
    return absl::StrCat("the GEMV reads a bf16, f16 or f32 bias, not ", dtype_name(bias));
  }
  if (n <= 0 || k <= 0) return absl::StrCat("empty weight [", n, ", ", k, "]");
  if (k % 8 != 0) return absl::StrCat("K = ", k, " is not a multiple of 8 (16-byte rows)");
  // Template parameters and 32-bit row indexing inside the kernel.
  if (n > (int64_t{1} << 30) || k > (int64_t{1} << 30)) {
    return absl::StrCat("weight [", n, ", ", k, "] is too large");
  }
  return std::nullopt;
}

bool gemv_supports_epilogue(GemmEpilogue epilogue) {
  switch (epilogue) {
    case GemmEpilogue::kNone:
    case GemmEpilogue::kBias:
    case GemmEpilogue::kResidual:
    case GemmEpilogue::kBiasResidual: return true;
  }
  return false;
}

GemvSpec gemv_spec_for(int64_t n, int64_t k) {
  GemvSpec s;
  s.n = n;
  s.k = k;
  s.warps = 8;
  // Two row tiles halve the activation reads per weight byte; take them when N still gives
  // about two blocks per SM or more (o/qkv/down at 4096 features would get only 128 blocks).
  s.row_tiles = n >= 8192 ? 2 : 1;
  // ~128 bytes of weight loads in flight per lane: unroll x row_tiles x 2 rows x 16 bytes.
  s.unroll = s.row_tiles == 2 ? 2 : 4;
  return s;
}

bool gemv_heuristic(int64_t n, int64_t k) { return n * k < (int64_t{8} << 20); }

bool GemvOptions::use_gemv(int64_t n, int64_t k) const {
  GemvChoice c = default_choice;
  for (const ShapeChoice& s : per_shape) {
    if (s.n == n && s.k == k) {
      c = s.choice;
      break;
    }
  }
  switch (c) {
    case GemvChoice::kHeuristic: return gemv_heuristic(n, k);
    case GemvChoice::kCublas: return false;
    case GemvChoice::kGemv: return true;
  }
  return false;
}

absl::Status lower_gemv(const PlanGemm& g, DType bias_dtype, LoweringContext& ctx) {
  if (!gemv_supports_epilogue(g.epilogue)) {
    return ctx.unsupported(absl::StrCat("the GEMV has no epilogue ", static_cast<int>(g.epilogue)));
  }
  const bool bias = g.epilogue == GemmEpilogue::kBias || g.epilogue == GemmEpilogue::kBiasResidual;
  const bool residual =
      g.epilogue == GemmEpilogue::kResidual || g.epilogue == GemmEpilogue::kBiasResidual;
  if (std::optional<std::string> why =
          gemv_ineligible(g.a_dtype, g.b_dtype, g.out_dtype, bias_dtype, bias, g.n, g.k)) {
    return ctx.unsupported(*why);
  }
  auto spec = std::make_shared<GemvSpec>(gemv_spec_for(g.n, g.k));
  spec->dtype = g.a_dtype;
  spec->out_dtype = g.out_dtype;
  spec->bias_dtype = bias ? bias_dtype : g.a_dtype;
  spec->bias = bias;
  spec->residual = residual;
  LaunchRule rule = spec->rule();
  rule.bound = {g.m, 0, kGemvMaxRows};
  std::vector<BoundParam> args = {{"out", LaunchArg::tensor(g.out)},
                                  {"a", LaunchArg::tensor(g.a)},
                                  {"w", LaunchArg::tensor(g.b)},
                                  {"m", LaunchArg::integer(g.m)}};
  if (bias) args.push_back({"bias", LaunchArg::tensor(g.bias)});
  if (residual) args.push_back({"residual", LaunchArg::tensor(g.residual)});
  return ctx.launch(std::move(spec), std::move(rule), std::move(args));
}

}  // namespace kiln
