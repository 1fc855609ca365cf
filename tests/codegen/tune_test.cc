// The autotuner without a GPU: tuning attributes round-trip through the IR text and reach the
// kernel specs and launches they name (what `kiln compile --tune` writes and `--from-ir` reads);
// tune_graph keeps the fastest candidate that matches the default, shares one tuning between
// nodes with one key, and reuses its JSON cache; decode_config rejects bad knobs by name.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>

#include "codegen/compile_model.h"
#include "codegen/families/flash_attention_decode.h"
#include "codegen/lowering.h"
#include "codegen/tune/tuner.h"
#include "ir/parser.h"
#include "ir/printer.h"
#include "tests/codegen/codegen_test_util.h"

namespace kiln {
namespace {

DecodeConfig tuned_decode() {
  DecodeConfig c;
  c.tile_kv = 32;
  c.warps = 4;
  c.stages = 3;
  c.softmax = DecodeSoftmax::kUnifiedMax;
  c.softmax_bound = 6.5;
  c.split_blocks = 264;
  return c;
}

// What the GPU tuner would write: the knobs of every flash_attention and rmsnorm node.
void set_tuned_attrs(Graph& g) {
  for (const auto& n : g.nodes()) {
    if (n->op == OpKind::kFlashAttention) set_decode_attrs(tuned_decode(), n->attrs);
    if (n->op == OpKind::kRmsNorm) {
      n->attrs.set("norm_threads", int64_t{32});
      n->attrs.set("norm_rows", int64_t{4});
    }
  }
}

std::set<std::string> spec_keys(const LoweredGraph& l) {
  std::set<std::string> keys;
  for (const auto& s : l.specs) keys.insert(s->key());
  return keys;
}

TEST(Tune, AttributesRoundTripThroughTheIrAndReachTheKernels) {
  std::unique_ptr<Graph> g = testing::fused_graph(testing::smollm2_config());
  ASSERT_NE(g, nullptr);
  set_tuned_attrs(*g);
  const std::string text = print_graph(*g);
  EXPECT_NE(text.find("softmax = \"unified_max\""), std::string::npos) << text;
  EXPECT_NE(text.find("decode_stages = 3"), std::string::npos);
  EXPECT_NE(text.find("norm_rows = 4"), std::string::npos);
  absl::StatusOr<std::unique_ptr<Graph>> parsed = parse_graph(text);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(print_graph(**parsed), text);

  absl::StatusOr<LoweredGraph> l = lower_graph(**parsed);
  ASSERT_TRUE(l.ok()) << l.status();
  const std::set<std::string> keys = spec_keys(*l);
  EXPECT_TRUE(keys.count("flash_attention_decode_bf16_d64_g3_kv32_w4_st3_um")) << keys.size();
  // h = 576: 72 vectors of 8 over 32 threads = 3 per thread, 4 rows per block.
  EXPECT_TRUE(keys.count("rmsnorm_bf16_h576_vec8_vpt3_t32_r4"));
  int decode_launches = 0;
  for (const PlanLaunch& launch : l->launches) {
    const PlanKernel& k = l->kernels[launch.kernel];
    if (k.family == KernelFamily::kFlashAttentionDecode) {
      ++decode_launches;
      const auto& spec = static_cast<const FlashAttentionDecodeSpec&>(*l->specs[launch.kernel]);
      EXPECT_EQ(spec.stages, 3);
      EXPECT_EQ(launch.rule.block[0], "128");
      EXPECT_EQ(launch.rule.dynamic_shared_bytes, std::to_string(spec.shared_bytes()));
      EXPECT_NE(launch.rule.grid[2].find("264"), std::string::npos) << launch.rule.grid[2];
      // phi is the last entry parameter, bound to the attribute's value.
      ASSERT_EQ(k.params.back().name, "phi");
      EXPECT_EQ(launch.args.back().real, 6.5);
    }
    if (k.family == KernelFamily::kRmsNorm) {
      EXPECT_EQ(launch.rule.block[0], "128");  // 4 rows x 32 threads
      EXPECT_NE(launch.rule.grid[0].find("cdiv("), std::string::npos) << launch.rule.grid[0];
    }
  }
  EXPECT_EQ(decode_launches, 2);  // two layers
}

TEST(Tune, BadKnobsAreNamed) {
  Attributes a;
  a.set("softmax", std::string("fast"));
  absl::StatusOr<DecodeConfig> c = decode_config(a, 128);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("unified_max"), std::string::npos) << c.status();
  Attributes big;
  big.set("decode_tile_kv", int64_t{64});
  big.set("decode_warps", int64_t{8});
  big.set("decode_stages", int64_t{4});
  c = decode_config(big, 128);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("shared memory"), std::string::npos) << c.status();
  Attributes tile;
  tile.set("decode_tile_kv", int64_t{24});
  EXPECT_FALSE(decode_config(tile, 64).ok());
  // Defaults round-trip through the attributes.
  Attributes d;
  set_decode_attrs(DecodeConfig{}, d);
  absl::StatusOr<DecodeConfig> back = decode_config(d, 64);
  ASSERT_TRUE(back.ok()) << back.status();
  DecodeConfig expect;
  expect.split_blocks = kDecodeTargetBlocks;
  EXPECT_EQ(*back, expect);
}

// A family over rmsnorm nodes with scripted trials: candidate 1 is fastest but wrong,
// candidate 2 the fastest correct one, candidate 3 fails to run.
class ScriptedFamily final : public TunableFamily {
 public:
  mutable int runs = 0;
  bool fail_if_run = false;

  std::string name() const override { return "scripted"; }
  bool applies(const Node& n) const override { return n.op == OpKind::kRmsNorm; }
  std::string key(const Node&) const override { return "rmsnorm_h576"; }
  absl::StatusOr<std::vector<Candidate>> candidates(const Node&) const override {
    std::vector<Candidate> c(4);
    for (int i = 0; i < 4; ++i) {
      c[i].label = absl::StrCat("c", i);
      c[i].attrs.set("norm_rows", int64_t{i + 1});
    }
    return c;
  }
  absl::StatusOr<std::vector<std::shared_ptr<const KernelSpec>>> specs(
      const Node&, const Candidate&) const override {
    return std::vector<std::shared_ptr<const KernelSpec>>{};
  }
  absl::StatusOr<Trial> run(const Node&, const Candidate& c, TuneDevice&) const override {
    ++runs;
    if (fail_if_run) return absl::InternalError("the cache should have answered");
    const int64_t i = c.attrs.int_or("norm_rows", 0) - 1;
    if (i == 3) return absl::InternalError("launch failed");
    Trial t;
    t.us = i == 0 ? 10 : i == 1 ? 5 : 7;
    t.output = {1.f, 2.f, i == 1 ? 2.5f : 2.001f};
    return t;
  }
  double tolerance(const Node&) const override { return 1e-3; }
};

class NoGpu final : public TuneDevice {
 public:
  std::string name() const override { return "Test GPU"; }
  absl::Status prepare(const std::vector<std::shared_ptr<const KernelSpec>>&) override {
    return absl::OkStatus();
  }
  absl::StatusOr<const GpuKernel*> kernel(const std::string& key) override {
    return absl::NotFoundError(key);
  }
  GpuDevice* gpu() override { return nullptr; }
};

TEST(Tune, KeepsFastestMatchingCandidateSharesItAndCachesIt) {
  std::unique_ptr<Graph> g = testing::fused_graph(testing::smollm2_config());
  ASSERT_NE(g, nullptr);
  const std::string path = testing::unique_temp_path("tune.json");
  absl::StatusOr<TuneCache> cache = TuneCache::load(path);  // absent: empty
  ASSERT_TRUE(cache.ok()) << cache.status();
  ScriptedFamily f;
  NoGpu dev;
  absl::StatusOr<std::vector<TuneResult>> r = tune_graph(*g, {&f}, dev, *cache);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 1u);  // every layer's rmsnorm shares the key
  EXPECT_EQ(f.runs, 4);
  const TuneResult& t = (*r)[0];
  EXPECT_EQ(t.label, "c2");
  EXPECT_EQ(t.us, 7);
  EXPECT_EQ(t.default_us, 10);
  EXPECT_EQ(t.tried, 4);
  EXPECT_EQ(t.rejected, 2);
  int tuned = 0;
  for (const auto& n : g->nodes()) {
    if (n->op != OpKind::kRmsNorm) continue;
    ++tuned;
    EXPECT_EQ(n->attrs.int_or("norm_rows", 0), 3);
  }
  EXPECT_GT(tuned, 1);
  EXPECT_NE(tune_report(*r).find("c2"), std::string::npos);
  ASSERT_TRUE(cache->save().ok());

  // A second compile reads the file and runs nothing.
  std::unique_ptr<Graph> g2 = testing::fused_graph(testing::smollm2_config());
  absl::StatusOr<TuneCache> again = TuneCache::load(path);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->size(), 1u);
  ScriptedFamily f2;
  f2.fail_if_run = true;
  r = tune_graph(*g2, {&f2}, dev, *again);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE((*r)[0].cached);
  EXPECT_EQ((*r)[0].chosen.int_or("norm_rows", 0), 3);
  // Another device name is another entry: it tunes again.
  class OtherGpu final : public TuneDevice {
   public:
    std::string name() const override { return "Other GPU"; }
    absl::Status prepare(const std::vector<std::shared_ptr<const KernelSpec>>&) override {
      return absl::OkStatus();
    }
    absl::StatusOr<const GpuKernel*> kernel(const std::string& k) override {
      return absl::NotFoundError(k);
    }
    GpuDevice* gpu() override { return nullptr; }
  } other;
  EXPECT_FALSE(tune_graph(*g2, {&f2}, other, *again).ok());
  std::remove(path.c_str());
}

TEST(Tune, MalformedCacheIsAnErrorNamingTheFile) {
  const std::string path = testing::unique_temp_path("bad-tune.json");
  for (const char* text : {"[1, 2]", "{\"version\": 1, \"entries\": {\"x\": {\"attrs\": 3}}}",
                           "{\"version\": 7}", "not json"}) {
    std::ofstream(path) << text;
    absl::StatusOr<TuneCache> c = TuneCache::load(path);
    ASSERT_FALSE(c.ok()) << text;
    EXPECT_NE(c.status().message().find(path), std::string::npos) << c.status();
  }
  std::remove(path.c_str());
}

// The whole path of `kiln compile --tune`, then `--from-ir` of the final IR it dumped: the same
// tuned kernels come back (kernels listed, not NVRTC-compiled: no GPU or NVRTC needed).
class AttrTuner final : public GraphTuner {
 public:
  absl::StatusOr<std::string> tune(Graph& g) override {
    set_tuned_attrs(g);
    return std::string("tuned\n");
  }
};

TEST(Tune, CompileWritesChoicesIntoTheIrAndFromIrRecompilesThem) {
  AttrTuner tuner;
  CompileOptions o;
  o.model = testing::fixture("tiny-gqa");
  o.build_kernels = false;
  o.tuner = &tuner;
  o.dump_ir_dir = testing::unique_temp_path("tune-dump");
  absl::StatusOr<CompiledPlan> built = build_plan(o);
  ASSERT_TRUE(built.ok()) << built.status();
  EXPECT_EQ(built->report.tune, "tuned\n");
  EXPECT_NE(built->plan.ir.find("softmax = \"unified_max\""), std::string::npos);
  std::set<std::string> tuned;
  for (const PlanKernel& k : built->plan.kernels) tuned.insert(k.key);
  bool saw_um = false;
  for (const std::string& k : tuned) saw_um |= k.find("_st3_um") != std::string::npos;
  EXPECT_TRUE(saw_um);

  CompileOptions again;
  again.model = o.model;
  again.build_kernels = false;
  again.from_ir = o.dump_ir_dir + "/99-final.kir";
  absl::StatusOr<CompiledPlan> rebuilt = build_plan(again);
  ASSERT_TRUE(rebuilt.ok()) << rebuilt.status();
  std::set<std::string> keys;
  for (const PlanKernel& k : rebuilt->plan.kernels) keys.insert(k.key);
  EXPECT_EQ(keys, tuned);

  // An edited dump: the hand-set value is what gets compiled.
  std::ifstream in(again.from_ir);
  std::stringstream text;
  text << in.rdbuf();
  std::string ir = text.str();
  for (size_t at; (at = ir.find("decode_stages = 3")) != std::string::npos;) {
    ir.replace(at, 17, "decode_stages = 1");
  }
  const std::string edited = testing::unique_temp_path("edited.kir");
  std::ofstream(edited) << ir;
  again.from_ir = edited;
  rebuilt = build_plan(again);
  ASSERT_TRUE(rebuilt.ok()) << rebuilt.status();
  bool saw_st1 = false;
  for (const PlanKernel& k : rebuilt->plan.kernels) saw_st1 |= k.key.find("_st1_um") != std::string::npos;
  EXPECT_TRUE(saw_st1);
}

}  // namespace
}  // namespace kiln
