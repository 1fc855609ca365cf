// Lowering of fused graphs (build_llama + the default pipeline, as `kiln compile` makes them) to
// kernel specs, launches and GEMM entries; spec keys; bound arguments; emitted sources.
#include "codegen/lowering.h"

#include <gtest/gtest.h>

#include <set>

#include "absl/strings/str_cat.h"

#include "codegen/families/flash_attention_prefill.h"
#include "codegen/families/fused_elementwise.h"
#include "codegen/families/gemv.h"
#include "codegen/kernel_source.h"
#include "ir/parser.h"
#include "ir/printer.h"
#include "ir/verifier.h"
#include "plan/launch_binding.h"
#include "plan/launch_expr.h"
#include "tests/codegen/codegen_test_util.h"

namespace kiln {
namespace {

TEST(KernelSpec, KeyIsCanonical) {
  FlashAttentionPrefillSpec s;
  s.head_dim = 64;
  s.group = 3;
  EXPECT_EQ(s.key(), "flash_attention_prefill_bf16_d64_g3_q64_kv64_w4");
  const std::string plain = spec_key(KernelFamily::kRope, DType::kF16, {{"d", 64}});
  EXPECT_EQ(plain, "rope_f16_d64");
  const std::string baked = spec_key(KernelFamily::kRope, DType::kF16, {{"d", 64}}, {}, "x");
  EXPECT_EQ(baked.rfind(plain + "_h", 0), 0u);
  EXPECT_EQ(baked.size(), plain.size() + 10);
  EXPECT_NE(baked, spec_key(KernelFamily::kRope, DType::kF16, {{"d", 64}}, {}, "y"));
}

using testing::AnyAddress;

// An attention's ropes fold into its KV append only when nothing else reads them: a rope result
// that is also a graph output keeps its own launch, and the attention its kv_append. A slice
// read contiguously (by a GEMM) is refused by name.
std::string rope_attention_ir(const std::string& extra_output) {
  return absl::StrCat(R"(graph @g {
  symbol T <= 16
  symbol S <= 4
  symbol P <= 8
  symbol NP <= 32
  symbol K <= 64
  input %x : bf16[T,256]
  input %positions : i32[T]
  input %slot_mapping : i32[T]
  input %qo_indptr : i32[S+1]
  input %kv_page_indptr : i32[S+1]
  input %kv_page_indices : i32[P]
  input %kv_last_page_len : i32[S]
  input %k_cache : bf16[NP,16,1,64]
  input %v_cache : bf16[NP,16,1,64]
  param @w : bf16[8,64]
  %qkv = neg(%x) : bf16[T,256]
  %qs = slice(%qkv) {axis = 1, start = 0, end = 128} : bf16[T,128]
  %ks = slice(%qkv) {axis = 1, start = 128, end = 192} : bf16[T,64]
  %vs = slice(%qkv) {axis = 1, start = 192, end = 256} : bf16[T,64]
  %q0 = reshape(%qs) {shape = [0, 2, 64]} : bf16[T,2,64]
  %k0 = reshape(%ks) {shape = [0, 1, 64]} : bf16[T,1,64]
  %v = reshape(%vs) {shape = [0, 1, 64]} : bf16[T,1,64]
  %q = rope(%q0, %positions) {layout = "half", rotary_dim = 64, theta = 10000.0} : bf16[T,2,64]
  %k = rope(%k0, %positions) {layout = "half", rotary_dim = 64, theta = 10000.0} : bf16[T,1,64]
  %o, %kc, %vc = flash_attention(%q, %k, %v, %k_cache, %v_cache, %positions, %slot_mapping, %qo_indptr, %kv_page_indptr, %kv_page_indices, %kv_last_page_len) {scale = 0.125} : bf16[T,2,64], bf16[NP,16,1,64], bf16[NP,16,1,64]
  output o = %o
)", extra_output, "}\n");
}

std::set<KernelFamily> launched_families(const std::string& ir) {
  absl::StatusOr<std::unique_ptr<Graph>> g = parse_graph(ir);
  EXPECT_TRUE(g.ok()) << g.status();
  if (!g.ok()) return {};
  absl::StatusOr<LoweredGraph> l = lower_graph(**g, {.add_sampling = false});
  EXPECT_TRUE(l.ok()) << l.status();
  if (!l.ok()) return {};
  std::set<KernelFamily> out;
  for (const PlanLaunch& launch : l->launches) out.insert(l->kernels[launch.kernel].family);
  return out;
}

TEST(Lowering, RopesFoldIntoTheKvAppendOnlyWhenTheAttentionIsTheirOnlyReader) {
  const std::set<KernelFamily> fused = launched_families(rope_attention_ir(""));
  EXPECT_TRUE(fused.count(KernelFamily::kRopeKvAppend));
  EXPECT_FALSE(fused.count(KernelFamily::kRope));
  EXPECT_FALSE(fused.count(KernelFamily::kKvAppend));
  const std::set<KernelFamily> apart = launched_families(rope_attention_ir("  output k = %k\n"));
  EXPECT_FALSE(apart.count(KernelFamily::kRopeKvAppend));
  EXPECT_TRUE(apart.count(KernelFamily::kRope));
  EXPECT_TRUE(apart.count(KernelFamily::kKvAppend));

  std::string gemm = rope_attention_ir("  output y = %y\n");
  gemm.insert(gemm.find("  output o"),
              "  %y = matmul(%ks, @w) : bf16[T,8]\n");  // a contiguous reader of the slice
  absl::StatusOr<std::unique_ptr<Graph>> g = parse_graph(gemm);
  ASSERT_TRUE(g.ok()) << g.status();
  absl::StatusOr<LoweredGraph> l = lower_graph(**g, {.add_sampling = false});
  ASSERT_FALSE(l.ok());
  EXPECT_NE(l.status().message().find("%ks is a strided view"), std::string::npos) << l.status();
}

TEST(Lowering, SmolLM2FusedGraph) {
  AnyAddress any;
  std::unique_ptr<Graph> g = testing::fused_graph(testing::smollm2_config());
  ASSERT_NE(g, nullptr);
  ASSERT_TRUE(verify(*g).ok());
  absl::StatusOr<LoweredGraph> l = lower_graph(*g);
  ASSERT_TRUE(l.ok()) << l.status();
  std::set<std::string> keys;
  for (const auto& s : l->specs) keys.insert(s->key());
  EXPECT_TRUE(keys.count("flash_attention_prefill_bf16_d64_g3_q64_kv64_w4"));
  EXPECT_TRUE(keys.count("flash_attention_decode_bf16_d64_g3_kv16_w4_st2"));
  // Decode attention is one launch per layer: the last split merges, counting the splits in a
  // zeroed workspace of S x kv_heads ints (the runtime zero-fills it once; the kernel restores it).
  int decode_launches = 0;
  for (const PlanLaunch& launch : l->launches) {
    if (l->kernels[launch.kernel].family != KernelFamily::kFlashAttentionDecode) continue;
    ++decode_launches;
    const LaunchArg* counters = nullptr;
    for (const LaunchArg& a : launch.args) {
      if (a.kind == LaunchArg::Kind::kWorkspace && a.value.starts_with("attn_split_counters_")) {
        counters = &a;
      }
    }
    ASSERT_NE(counters, nullptr);
    const PlanWorkspace* ws = nullptr;
    for (const PlanWorkspace& w : l->workspaces) {
      if (w.name == counters->value) ws = &w;
    }
    ASSERT_NE(ws, nullptr) << counters->value;
    EXPECT_TRUE(ws->zeroed);
    EXPECT_EQ(ws->bytes, "S*12");  // 3 KV heads x 4 bytes per sequence
  }
  EXPECT_EQ(decode_launches, 2);  // one per layer
  // fuse-horizontal's QKV GEMM writes [T, 960]; q, k and v reach one rope_kv_append launch per
  // layer (both ropes and the KV append) as strided rows of it (960 apart), not copies.
  int fused_ropes = 0, ropes = 0, appends = 0;
  for (const std::string& k : keys) {
    fused_ropes += k.starts_with("rope_kv_append_bf16_d64_r64_qs960_ks960_vs960_");
    ropes += k.starts_with("rope_bf16");
    appends += k.starts_with("kv_append");
  }
  EXPECT_EQ(fused_ropes, 1);
  EXPECT_EQ(ropes, 0);
  EXPECT_EQ(appends, 0);
  EXPECT_TRUE(keys.count("rmsnorm_bf16_h576_vec8_vpt1_t96"));
  EXPECT_TRUE(keys.count("embedding_bf16_h576_vec8"));
  EXPECT_TRUE(keys.count("sampling_f32_w32"));
  EXPECT_EQ(keys.size(), l->kernels.size());  // unique
  // 2 layers x (qkv, o, gate_up, down) + lm_head.
  EXPECT_EQ(l->gemms.size(), 9u);
  // Every residual add is of a GEMM's result (o_proj, down_proj), so gemm-epilogue folds each into
  // its GEMM and the norms stay plain rmsnorm nodes (which a small-batch GEMV absorbs).
  int residual = 0, fused_norms = 0;
  for (const PlanGemm& e : l->gemms) residual += e.epilogue == GemmEpilogue::kResidual;
  for (const PlanKernel& k : l->kernels) {
    if (k.family != KernelFamily::kRmsNormResidual) continue;
    for (const PlanLaunch& launch : l->launches) fused_norms += &l->kernels[launch.kernel] == &k;
  }
  EXPECT_EQ(residual, 2 * 2);
  EXPECT_EQ(fused_norms, 0);
  // Every launch passes exactly the entry's parameters.
  for (const PlanLaunch& launch : l->launches) {
    ASSERT_LT(launch.kernel, static_cast<int>(l->kernels.size()));
    const KernelSpec& spec = *l->specs[launch.kernel];
    EXPECT_EQ(entry_params(spec), l->kernels[launch.kernel].params);
    EXPECT_EQ(l->kernels[launch.kernel].params.size(), launch.args.size()) << spec.key();
    // The plan's binding accepts every argument (kinds fit the entry's types, symbols bound;
    // the cascade launches' CM, CL and CK too).
    const LaunchSymbols symbols = {{"T", 100}, {"S", 3},    {"K", 700},
                                   {"CM", 2},  {"CL", 512}, {"CK", 188}};
    absl::StatusOr<std::vector<BoundArg>> bound =
        bind_launch(l->kernels[launch.kernel], launch, symbols, any);
    EXPECT_TRUE(bound.ok()) << bound.status();
    absl::StatusOr<LaunchGeometry> dims = eval_launch_rule(launch.rule, symbols);
    EXPECT_TRUE(dims.ok()) << spec.key() << ": " << dims.status();
  }
}

// The small-batch GEMV path: a GEMM the options pick gets a GEMV launch of the same node whose
// bound (M <= 16) complements its PlanGemm's (M >= 17), so every step runs exactly one; operands
// and M are the GEMM's; kCublas adds none; the default heuristic picks by weight size.
std::vector<const PlanLaunch*> gemv_launches(const LoweredGraph& l) {
  std::vector<const PlanLaunch*> out;
  for (const PlanLaunch& launch : l.launches) {
    if (l.kernels[launch.kernel].family == KernelFamily::kGemv) out.push_back(&launch);
  }
  return out;
}

TEST(Lowering, GemvLaunchesCarryComplementaryBounds) {
  std::unique_ptr<Graph> g = testing::fused_graph(testing::smollm2_config());
  ASSERT_NE(g, nullptr);
  LoweringOptions all;
  all.gemv.default_choice = GemvChoice::kGemv;
  absl::StatusOr<LoweredGraph> l = lower_graph(*g, all);
  ASSERT_TRUE(l.ok()) << l.status();
  const std::vector<const PlanLaunch*> gemvs = gemv_launches(*l);
  ASSERT_EQ(gemvs.size(), l->gemms.size());  // every SmolLM2 GEMM is eligible (bf16, K % 8 == 0)
  AnyAddress any;
  for (const PlanGemm& e : l->gemms) {
    const PlanLaunch* launch = nullptr;
    for (const PlanLaunch* p : gemvs) {
      if (p->node == e.node) launch = p;
    }
    ASSERT_NE(launch, nullptr) << "no GEMV launch for node " << e.node;
    EXPECT_EQ(launch->rule.bound, (StepBound{e.m, 0, kGemvMaxRows}));
    EXPECT_EQ(e.bound, (StepBound{e.m, kGemvMaxRows + 1, 0}));
    for (int64_t m = 1; m <= 64; ++m) {
      EXPECT_NE(bound_admits(launch->rule.bound, m), bound_admits(e.bound, m)) << m;
    }
    // Operands by entry name: out, a, w first, then the epilogue's tensors, m, and with the
    // RMSNorm prologue the norm's weight and eps.
    const std::vector<EntryParam>& params = l->kernels[launch->kernel].params;
    ASSERT_EQ(params.size(), launch->args.size());
    // The merged gate/up GEMM's GEMV writes the SwiGLU result instead (Lowering.SwigluGemv).
    const bool swiglu = l->kernels[launch->kernel].key.find("_swiglu") != std::string::npos;
    EXPECT_EQ(swiglu, e.n == 3072 && e.k == 576) << l->kernels[launch->kernel].key;
    if (!swiglu) EXPECT_EQ(launch->args[0], LaunchArg::tensor(e.out));
    // The QKV and gate/up GEMVs normalize their input themselves (Lowering.NormGemv): they read
    // the norm's input, not e.a.
    const bool norm = l->kernels[launch->kernel].key.ends_with("_norm");
    EXPECT_EQ(norm, (e.n == 3072 || e.n == 960) && e.k == 576) << l->kernels[launch->kernel].key;
    if (!norm) EXPECT_EQ(launch->args[1], LaunchArg::tensor(e.a));
    EXPECT_EQ(launch->args[2], LaunchArg::tensor(e.b));
    const size_t m_at = params.size() - (norm ? 3 : 1);
    EXPECT_EQ(params[m_at].name, "m");
    EXPECT_EQ(launch->args[m_at], LaunchArg::integer(e.m));
    if (e.epilogue == GemmEpilogue::kResidual) {
      ASSERT_EQ(params.size(), 5u);
      EXPECT_EQ(params[3].name, "residual");
      EXPECT_EQ(launch->args[3], LaunchArg::tensor(e.residual));
    }
    const std::string key = l->kernels[launch->kernel].key;
    EXPECT_NE(key.find(absl::StrCat("_n", e.n, "_k", e.k, "_")), std::string::npos) << key;
    // Grid covers N in 16-feature tiles.
    absl::StatusOr<LaunchGeometry> dims = eval_launch_rule(launch->rule, {{"T", 1}, {"S", 1}});
    ASSERT_TRUE(dims.ok()) << dims.status();
    EXPECT_GE(dims->grid[0] * 16 * (key.find("_rt2_") != std::string::npos ? 2 : 1), e.n);
    EXPECT_TRUE(bind_launch(l->kernels[launch->kernel], *launch, {{"T", 5}, {"S", 5}}, any).ok());
  }
  // The LM head's M is S (last token rows), so its bound is on S, not T.
  const PlanGemm& head = l->gemms.back();
  EXPECT_EQ(head.n, 49152);
  EXPECT_EQ(head.m, "S");
  EXPECT_EQ(gemvs.back()->node, head.node);

  LoweringOptions none;
  none.gemv.default_choice = GemvChoice::kCublas;
  l = lower_graph(*g, none);
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_TRUE(gemv_launches(*l).empty());
  for (const PlanGemm& e : l->gemms) EXPECT_TRUE(e.bound.empty());

  // The default: weights under 8 Mi elements take the GEMV (SmolLM2: every projection), larger
  // ones stay on cuBLASLt (SmolLM2: the 49152 x 576 LM head).
  l = lower_graph(*g);
  ASSERT_TRUE(l.ok()) << l.status();
  ASSERT_EQ(gemv_launches(*l).size(), l->gemms.size() - 1);
  for (const PlanGemm& e : l->gemms) {
    EXPECT_EQ(e.bound.empty(), e.n * e.k >= (int64_t{8} << 20)) << e.n << " x " << e.k;
  }
  EXPECT_TRUE(l->gemms.back().bound.empty());

  // A per-shape choice overrides the default (what a tuner writes): the down projection only.
  LoweringOptions down;
  down.gemv.default_choice = GemvChoice::kCublas;
  down.gemv.per_shape.push_back({576, 1536, GemvChoice::kGemv});
  l = lower_graph(*g, down);
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(gemv_launches(*l).size(), 2u);  // one per layer
  for (const PlanGemm& e : l->gemms) EXPECT_EQ(e.bound.empty(), !(e.n == 576 && e.k == 1536));
}

// fuse-horizontal's gate/up GEMM and the SwiGLU after it: at M <= 16 the GEMV writes
// silu(gate)·up straight into the elementwise node's result, and the elementwise launch runs only
// in the steps where cuBLASLt computes the [M, 2F] product (M >= 17); other readers of the
// product, or the GEMM on cuBLASLt, leave the two launches as they were.
TEST(Lowering, SwigluGemv) {
  std::unique_ptr<Graph> g = testing::fused_graph(testing::smollm2_config());
  ASSERT_NE(g, nullptr);
  absl::StatusOr<LoweredGraph> l = lower_graph(*g);
  ASSERT_TRUE(l.ok()) << l.status();
  ValueNames names(*g);
  int absorbed = 0;
  for (const auto& node : g->nodes()) {
    std::optional<SwigluGemm> sw = match_swiglu_gemm(*g, *node);
    if (!sw || sw->gemm != node.get()) continue;
    ++absorbed;
    EXPECT_EQ(match_swiglu_gemm(*g, *sw->elementwise)->gemm, node.get());  // from either end
    const int gemm_index = g->index_of(node.get()), ew_index = g->index_of(sw->elementwise);
    const PlanLaunch* gemv = nullptr;
    const PlanLaunch* ew = nullptr;
    for (const PlanLaunch& launch : l->launches) {
      if (launch.node == gemm_index && l->kernels[launch.kernel].family == KernelFamily::kGemv) {
        gemv = &launch;
      }
      if (launch.node == ew_index) ew = &launch;
    }
    ASSERT_NE(gemv, nullptr);
    ASSERT_NE(ew, nullptr);
    const std::string ew_out = names(sw->elementwise->outputs[0]);
    EXPECT_EQ(l->kernels[gemv->kernel].key, "gemv_bf16_n3072_k576_rt2_w8_u2_swiglu_norm");
    EXPECT_EQ(gemv->args[0], LaunchArg::tensor(ew_out));
    EXPECT_EQ(gemv->rule.bound, (StepBound{"T", 0, kGemvMaxRows}));
    EXPECT_EQ(ew->args[0], LaunchArg::tensor(ew_out));
    EXPECT_EQ(ew->rule.bound, (StepBound{"T", kGemvMaxRows + 1, 0}));
    // 1536 features, 16 per block (a gate tile and its up tile).
    absl::StatusOr<LaunchGeometry> dims = eval_launch_rule(gemv->rule, {{"T", 1}, {"S", 1}});
    ASSERT_TRUE(dims.ok()) << dims.status();
    EXPECT_EQ(dims->grid[0], 1536u / 16);
  }
  EXPECT_EQ(absorbed, 2);  // one per layer

  // On cuBLASLt the GEMM has no GEMV to absorb the SwiGLU: the elementwise launch is unbounded.
  LoweringOptions cublas;
  cublas.gemv.default_choice = GemvChoice::kCublas;
  l = lower_graph(*g, cublas);
  ASSERT_TRUE(l.ok()) << l.status();
  for (const PlanLaunch& launch : l->launches) EXPECT_TRUE(launch.rule.bound.empty());

  // A second reader of the gate/up product: no match (the product must exist at every M).
  const Node* gemm = nullptr;
  for (const auto& node : g->nodes()) {
    std::optional<SwigluGemm> sw = match_swiglu_gemm(*g, *node);
    if (sw && sw->gemm == node.get()) gemm = node.get();
  }
  ASSERT_NE(gemm, nullptr);
  g->add_output("gate_up", gemm->outputs[0]);
  EXPECT_FALSE(match_swiglu_gemm(*g, *gemm).has_value());
}

TEST(Lowering, GemvEligibility) {
  EXPECT_EQ(gemv_ineligible(DType::kBF16, DType::kBF16, DType::kBF16, DType::kBF16, false, 64, 64),
            std::nullopt);
  EXPECT_NE(gemv_ineligible(DType::kBF16, DType::kBF16, DType::kBF16, DType::kBF16, false, 64, 60)
                ->find("multiple of 8"),
            std::string::npos);
  EXPECT_NE(gemv_ineligible(DType::kBF16, DType::kQ4_1, DType::kBF16, DType::kBF16, false, 64, 64)
                ->find("bf16·bf16"),
            std::string::npos);
  EXPECT_TRUE(gemv_ineligible(DType::kF32, DType::kF32, DType::kF32, DType::kF32, false, 64, 64));
  GemvSpec s = gemv_spec_for(4096, 14336);
  EXPECT_EQ(s.key(), "gemv_bf16_n4096_k14336_rt1_w8_u4");
  s.bias = s.residual = true;
  s.out_dtype = DType::kF32;
  EXPECT_EQ(s.key(), "gemv_bf16_n4096_k14336_rt1_w8_u4_bias_res_outf32");
  EXPECT_EQ(entry_params(s).size(), 6u);
  EXPECT_EQ(gemv_spec_for(28672, 4096).row_tiles, 2);
}

TEST(Lowering, DecodeSplitFollowsBatchAndContext) {
  std::unique_ptr<Graph> g = testing::fused_graph(testing::smollm2_config());
  ASSERT_NE(g, nullptr);
  absl::StatusOr<LoweredGraph> l = lower_graph(*g);
  ASSERT_TRUE(l.ok()) << l.status();
  const PlanLaunch* decode = nullptr;
  for (const PlanLaunch& k : l->launches) {
    if (l->kernels[k.kernel].family == KernelFamily::kFlashAttentionDecode) decode = &k;
  }
  ASSERT_NE(decode, nullptr);
  auto splits = [&](int64_t seqs, int64_t kv) {
    return *eval_launch_expr(decode->rule.grid[2], {{"S", seqs}, {"K", kv}});
  };
  // SmolLM2 has 3 KV heads: the grid aims at ~528 blocks, at least 256 KV rows per split, <= 32.
  EXPECT_EQ(splits(1, 32768), 32);
  EXPECT_EQ(splits(1, 2000), 8);
  EXPECT_EQ(splits(1, 100), 1);
  EXPECT_EQ(splits(16, 4096), 11);
  EXPECT_EQ(splits(64, 4096), 3);
  // The partial workspaces hold the largest split count for the most sequences; the split
  // counters one int per (sequence, KV head).
  // The cascade prefix partials (one pair for all layers) hold the prefix kernel's most splits.
  for (const PlanWorkspace& w : l->workspaces) {
    if (w.zeroed) {
      EXPECT_EQ(w.bytes, "S*12");
      continue;
    }
    const bool prefix = w.name.rfind("cascade_prefix_", 0) == 0;
    EXPECT_EQ(w.bytes.rfind(prefix ? "64*S*" : "32*S*", 0), 0u) << w.name << ": " << w.bytes;
  }
}

TEST(Lowering, PrefillGridCoversEveryQueryTile) {
  std::unique_ptr<Graph> g = testing::fused_graph(testing::smollm2_config());
  ASSERT_NE(g, nullptr);
  absl::StatusOr<LoweredGraph> l = lower_graph(*g);
  ASSERT_TRUE(l.ok());
  for (const PlanLaunch& launch : l->launches) {
    if (l->kernels[launch.kernel].family != KernelFamily::kFlashAttentionPrefill) continue;
    // Ragged lengths 1, 17, 100 (T = 118): tiles of 64 rows of (token, head) with G = 3.
    const int64_t tiles = (1 * 3 + 63) / 64 + (17 * 3 + 63) / 64 + (100 * 3 + 63) / 64;
    absl::StatusOr<int64_t> grid = eval_launch_expr(launch.rule.grid[0], {{"T", 118}, {"S", 3}});
    ASSERT_TRUE(grid.ok());
    EXPECT_GE(*grid, tiles);
  }
}

// flash_attention {prefill_kernel = "pipelined"} selects the pipelined prefill kernel, whose
// launches carry its dynamic shared memory; the default stays the simple kernel; an unknown name
// or a tile that does not fit is refused with a message naming it.
TEST(Lowering, PrefillKernelAttributeSelectsPipelinedKernel) {
  auto lower_with = [](const std::vector<std::pair<std::string, Attribute>>& attrs)
      -> absl::StatusOr<LoweredGraph> {
    std::unique_ptr<Graph> g = testing::fused_graph(testing::smollm2_config());
    if (g == nullptr) return absl::InternalError("no graph");
    for (const auto& n : g->nodes()) {
      if (n->op != OpKind::kFlashAttention) continue;
      for (const auto& [name, value] : attrs) n->attrs.set(name, value);
    }
    return lower_graph(*g);
  };
  auto prefill_launch = [](const LoweredGraph& l) -> const PlanLaunch* {
    for (const PlanLaunch& k : l.launches) {
      if (l.kernels[k.kernel].family == KernelFamily::kFlashAttentionPrefill) return &k;
    }
    return nullptr;
  };
  absl::StatusOr<LoweredGraph> simple = lower_with({});
  ASSERT_TRUE(simple.ok()) << simple.status();
  const PlanLaunch* s = prefill_launch(*simple);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(simple->kernels[s->kernel].key, "flash_attention_prefill_bf16_d64_g3_q64_kv64_w4");
  EXPECT_EQ(s->rule.dynamic_shared_bytes, "0");

  // SmolLM2: head_dim 64, so the d64 defaults (4 warps, 64 x 128 tiles, 2 stages):
  // (64 + 2 * 2 * 128) rows x (64 + 8) x 2 bytes.
  absl::StatusOr<LoweredGraph> pipe = lower_with({{"prefill_kernel", std::string("pipelined")}});
  ASSERT_TRUE(pipe.ok()) << pipe.status();
  const PlanLaunch* p = prefill_launch(*pipe);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(pipe->kernels[p->kernel].key,
            "flash_attention_prefill_bf16_d64_g3_q64_kv128_w4_st2_pipe");
  EXPECT_EQ(p->rule.dynamic_shared_bytes, std::to_string((64 + 2 * 2 * 128) * 72 * 2));
  EXPECT_EQ(p->rule.block[0], "128");
  absl::StatusOr<std::string> src = emit_kernel_source(*pipe->specs[p->kernel]);
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_NE(src->find("flash_attention_prefill_pipelined<kiln_t, kiln_t, 64, 3, 64, 128, 4, 2>"),
            std::string::npos)
      << *src;
  EXPECT_NE(src->find("__launch_bounds__(128, 1)"), std::string::npos) << *src;

  absl::StatusOr<LoweredGraph> knobs =
      lower_with({{"prefill_kernel", std::string("pipelined")},
                  {"warps", int64_t{8}},
                  {"tile_kv", int64_t{64}},
                  {"stages", int64_t{3}}});
  ASSERT_TRUE(knobs.ok()) << knobs.status();
  EXPECT_EQ(knobs->kernels[prefill_launch(*knobs)->kernel].key,
            "flash_attention_prefill_bf16_d64_g3_q128_kv64_w8_st3_pipe");

  absl::StatusOr<LoweredGraph> bad = lower_with({{"prefill_kernel", std::string("fast")}});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("prefill_kernel \"fast\""), std::string::npos)
      << bad.status();
  absl::StatusOr<LoweredGraph> big = lower_with(
      {{"prefill_kernel", std::string("pipelined")}, {"stages", int64_t{9}}});
  ASSERT_FALSE(big.ok());
  EXPECT_NE(big.status().message().find("stages"), std::string::npos) << big.status();
}

// flash_attention {prefill_kernel = "hopper"} selects the sm_90a kernel: 128-row Q tiles, 384
// threads (a producer and two consumer warpgroups), the shared memory its header sums, the same
// grid as the other prefill kernels; knobs it cannot take and an fp8e4m3 cache are refused.
TEST(Lowering, PrefillKernelAttributeSelectsHopperKernel) {
  auto lower_with =
      [](const ModelConfig& config, const std::vector<std::pair<std::string, Attribute>>& attrs,
         std::optional<DType> kv_dtype = std::nullopt) -> absl::StatusOr<LoweredGraph> {
    std::unique_ptr<Graph> g = testing::fused_graph(config, DType::kBF16, kv_dtype);
    if (g == nullptr) return absl::InternalError("no graph");
    for (const auto& n : g->nodes()) {
      if (n->op != OpKind::kFlashAttention) continue;
      for (const auto& [name, value] : attrs) n->attrs.set(name, value);
    }
    return lower_graph(*g);
  };
  auto prefill_launch = [](const LoweredGraph& l) -> const PlanLaunch* {
    for (const PlanLaunch& k : l.launches) {
      if (l.kernels[k.kernel].family == KernelFamily::kFlashAttentionPrefill) return &k;
    }
    return nullptr;
  };
  const std::pair<std::string, Attribute> hopper = {"prefill_kernel", std::string("hopper")};

  // SmolLM2: head_dim 64, G = 3: the d64 default of 3 stages of 128-row K/V tiles:
  // 1024 + 128 x 64 x 2 + 3 x 2 x 128 x 64 x 2 + 3 x 3 x 8 bytes.
  absl::StatusOr<LoweredGraph> d64 = lower_with(testing::smollm2_config(), {hopper});
  ASSERT_TRUE(d64.ok()) << d64.status();
  const PlanLaunch* p = prefill_launch(*d64);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(d64->kernels[p->kernel].key,
            "flash_attention_prefill_bf16_d64_g3_q128_kv128_w12_st3_hopper");
  EXPECT_EQ(p->rule.dynamic_shared_bytes, std::to_string(1024 + 16384 + 3 * 32768 + 72));
  EXPECT_EQ(p->rule.block[0], "384");
  EXPECT_EQ(p->rule.grid[0], "cdiv(T*3, 128) + S");
  absl::StatusOr<std::string> src = emit_kernel_source(*d64->specs[p->kernel]);
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_NE(src->find("flash_attention_prefill_hopper<kiln_t, kiln_t, 64, 3, 128, 3>"),
            std::string::npos)
      << *src;
  EXPECT_NE(src->find("__launch_bounds__(384, 1)"), std::string::npos) << *src;

  // head_dim 128 (G = 2): 2 stages by default (160 KB), tile_kv 64 and 4 stages on request.
  const ModelConfig d128 = testing::d128_llama3_config();
  absl::StatusOr<LoweredGraph> big = lower_with(d128, {hopper});
  ASSERT_TRUE(big.ok()) << big.status();
  p = prefill_launch(*big);
  EXPECT_EQ(big->kernels[p->kernel].key,
            "flash_attention_prefill_bf16_d128_g2_q128_kv128_w12_st2_hopper");
  EXPECT_EQ(p->rule.dynamic_shared_bytes, std::to_string(1024 + 32768 + 2 * 65536 + 48));
  absl::StatusOr<LoweredGraph> knobs =
      lower_with(d128, {hopper, {"tile_kv", int64_t{64}}, {"stages", int64_t{4}}});
  ASSERT_TRUE(knobs.ok()) << knobs.status();
  EXPECT_EQ(knobs->kernels[prefill_launch(*knobs)->kernel].key,
            "flash_attention_prefill_bf16_d128_g2_q128_kv64_w12_st4_hopper");

  // Refused: a tile_q or warps other than the kernel's, 4 stages of 128-row tiles at head_dim
  // 128 (288 KB), an fp8e4m3 cache.
  for (const auto& attrs : std::vector<std::vector<std::pair<std::string, Attribute>>>{
           {hopper, {"tile_q", int64_t{64}}},
           {hopper, {"warps", int64_t{8}}},
           {hopper, {"tile_kv", int64_t{32}}},
           {hopper, {"stages", int64_t{4}}}}) {
    absl::StatusOr<LoweredGraph> bad = lower_with(d128, attrs);
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.status().message().find("hopper prefill"), std::string::npos) << bad.status();
  }
  absl::StatusOr<LoweredGraph> fp8 = lower_with(d128, {hopper}, DType::kFP8E4M3);
  ASSERT_FALSE(fp8.ok());
  EXPECT_NE(fp8.status().message().find("fp8e4m3"), std::string::npos) << fp8.status();
}

TEST(Lowering, PrimitiveGraphSaysPassesMustRun) {
  Graph prim;
  ASSERT_TRUE(prim.symbols().add({"T", 8}).ok());
  Value* x = prim.add_input("x", {DType::kF32, {Dim::symbolic("T"), Dim::constant(4)}});
  Node* n = prim.add_node(OpKind::kReduceSum, {x}, {},
                          {{DType::kF32, {Dim::symbolic("T"), Dim::constant(1)}}});
  prim.add_output("y", n->output());
  absl::StatusOr<LoweredGraph> l = lower_graph(prim);
  ASSERT_FALSE(l.ok());
  EXPECT_NE(l.status().message().find("reduce_sum"), std::string::npos);
  EXPECT_NE(l.status().message().find("fusion passes"), std::string::npos);
}

TEST(KernelSource, ElementwiseBroadcastAndEntry) {
  FusedElementwiseSpec s;
  s.dtype = DType::kBF16;
  s.expr = "mul($0, rsqrt($1))";
  s.input_dtypes = {DType::kBF16, DType::kF32};
  s.input_patterns = {"**", "*1"};
  s.output_dims = {"T", "576"};
  // out, in0, in1, n, and the one symbolic dim.
  const std::vector<EntryParam> params = entry_params(s);
  ASSERT_EQ(params.size(), 5u);
  EXPECT_EQ(params[1].name, "in0");
  EXPECT_EQ(params[3].type, ParamType::kI64);
  EXPECT_EQ(params[4].name, "dim0");
  EXPECT_EQ(params[4].type, ParamType::kI32);
  absl::StatusOr<std::string> src = emit_kernel_source(s);
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_NE(src->find("extern \"C\" __global__"), std::string::npos);
  EXPECT_NE(src->find(s.key()), std::string::npos);
  EXPECT_NE(src->find("GENERATED"), std::string::npos);
  EXPECT_NE(src->find("rsqrtf"), std::string::npos);
  s.expr = "add($0, $2)";  // reads an input the node lacks
  EXPECT_FALSE(emit_kernel_source(s).ok());
}

}  // namespace
}  // namespace kiln
