// The plan's JSON form: a plan with every field set survives plan -> JSON -> plan -> JSON, typed
// fields read back as written, and every missing or mistyped field is an error naming it (never a
// JSON library exception).
#include "plan/plan_json.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>

#include "tests/plan/plan_test_util.h"

namespace kiln {
namespace {

using nlohmann::json;

const std::vector<BlobRecord> kBlobs = {{"k.cubin", 256, 1000, 42}, {"k.ptx", 1280, 15, 7}};

TEST(PlanJson, RoundTripKeepsEveryField) {
  const Plan p = testing::make_sample_plan().plan;
  const json j = manifest_to_json(p, kBlobs);
  absl::StatusOr<Manifest> m = manifest_from_json(j);
  ASSERT_TRUE(m.ok()) << m.status();
  // Every field the writer emits is read back: writing the read plan gives the same JSON.
  EXPECT_EQ(manifest_to_json(m->plan, m->blobs), j);
  EXPECT_EQ(m->blobs, kBlobs);
  // And the typed values are the ones written (a field the writer forgot would pass the line
  // above but not these).
  const Plan& r = m->plan;
  EXPECT_EQ(r.arch, "sm_90a");
  EXPECT_EQ(r.nvrtc_flags, p.nvrtc_flags);
  EXPECT_EQ(r.model.summary(), p.model.summary());
  EXPECT_EQ(r.model.rope_scaling, p.model.rope_scaling);
  EXPECT_EQ(r.model.eos_ids, p.model.eos_ids);
  EXPECT_EQ(r.model.weights_dtype, DType::kF16);
  EXPECT_TRUE(r.model.rope_interleaved && r.model.tie_embeddings && r.model.attention_bias);
  EXPECT_EQ(r.limits.max_pool_pages, 4096);
  EXPECT_EQ(r.limits.page_size, 32);  // from the KV layout, its one home
  EXPECT_EQ(r.kernels[0].family, KernelFamily::kRmsNormResidual);
  ASSERT_EQ(r.kernels[0].params.size(), 4u);
  EXPECT_EQ(r.kernels[0].params[1].type, ParamType::kI64);
  EXPECT_EQ(r.kernels[0].params[3].type, ParamType::kF32);
  EXPECT_EQ(r.kernels[0].spill_bytes, 8);
  EXPECT_EQ(r.kernels[0].source_blob, 2);
  ASSERT_EQ(r.launches.size(), 2u);
  EXPECT_EQ(r.launches[0].rule, p.launches[0].rule);
  EXPECT_EQ(r.launches[0].args, p.launches[0].args);  // including -inf
  EXPECT_EQ(r.launches[1].args, p.launches[1].args);
  EXPECT_EQ(r.launches[1].node, -1);
  EXPECT_EQ(r.gemms[0].epilogue, GemmEpilogue::kBiasResidual);
  EXPECT_EQ(r.gemms[0].b_dtype, DType::kQ4_1);
  EXPECT_EQ(r.gemms[0].bias, "@layers.0.q_bias");
  EXPECT_EQ(r.workspaces[0].bytes, "32*S*4");
  EXPECT_EQ(r.aliases[0].of, "%k_cache.0");
  EXPECT_TRUE(std::isinf(r.constants[0].scalar) && r.constants[0].scalar < 0);
  ASSERT_TRUE(r.memory.has_value());
  EXPECT_EQ(r.memory->buffers[1].alias_of, "%5");
  EXPECT_EQ(r.memory->lower_bound_bytes, 256);
  EXPECT_EQ(r.kv, p.kv);
  ASSERT_EQ(r.weights.size(), 2u);
  EXPECT_EQ(r.weights[0].xxh3, p.weights[0].xxh3);
  EXPECT_EQ(r.weights[0].source_name, "token_embd.weight");
  EXPECT_FALSE(r.weights[0].packed());
  EXPECT_EQ(r.weights[1].blob, 3);
  EXPECT_EQ(r.find_kernel("k"), 0);
  EXPECT_EQ(r.find_kernel("nope"), -1);
  EXPECT_EQ(r.find_weight("lm_head"), &r.weights[1]);
  EXPECT_EQ(r.find_weight("nope"), nullptr);
}

// An fp8e4m3 KV cache: the layout's dtype is the one record of it; reading the plan gives the
// limits the same KV dtype, and the byte counts (computed, never stored) count the scales.
TEST(PlanJson, Fp8KvCacheRoundTrips) {
  Plan p = testing::make_sample_plan().plan;
  p.kv.dtype = DType::kFP8E4M3;
  p.limits.kv_dtype = DType::kFP8E4M3;
  absl::StatusOr<Manifest> m = manifest_from_json(manifest_to_json(p, kBlobs));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->plan.kv, p.kv);
  ASSERT_TRUE(m->plan.limits.kv_dtype.has_value());
  EXPECT_EQ(*m->plan.limits.kv_dtype, DType::kFP8E4M3);
  EXPECT_EQ(m->plan.limits.cache_dtype(), DType::kFP8E4M3);
  const KvLayout& kv = m->plan.kv;
  EXPECT_EQ(kv.bytes_per_page_per_layer(),
            2 * int64_t{kv.page_size} * kv.num_kv_heads * (kv.head_dim + 4));
  // A bf16 plan reads back without a KV dtype of its own.
  absl::StatusOr<Manifest> plain =
      manifest_from_json(manifest_to_json(testing::make_sample_plan().plan, kBlobs));
  ASSERT_TRUE(plain.ok());
  EXPECT_FALSE(plain->plan.limits.kv_dtype.has_value());
}

TEST(PlanJson, NoMemoryPlanAndNoRopeScaling) {
  Plan p = testing::make_sample_plan().plan;
  p.memory.reset();
  p.model.rope_scaling.reset();
  absl::StatusOr<Manifest> m = manifest_from_json(manifest_to_json(p, {}));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_FALSE(m->plan.memory.has_value());
  EXPECT_FALSE(m->plan.model.rope_scaling.has_value());
}

absl::Status read_error(const json& j) {
  absl::StatusOr<Manifest> m = manifest_from_json(j);
  return m.ok() ? absl::OkStatus() : m.status();
}

TEST(PlanJson, MissingAndMistypedFieldsAreNamed) {
  const json good = manifest_to_json(testing::make_sample_plan().plan, kBlobs);
  json j = good;
  j.erase("arch");
  EXPECT_EQ(read_error(j).message(), "manifest.arch: missing");
  j = good;
  j["kernels"][0]["params"][1]["type"] = "int";
  EXPECT_EQ(read_error(j).message(),
            "manifest.kernels[0].params[1].type: expected one of ptr, i32, i64, f32, got \"int\"");
  j = good;
  j["launches"][0]["args"][2]["kind"] = 3;
  EXPECT_NE(read_error(j).message().find("manifest.launches[0].args[2].kind: expected one of"),
            std::string::npos);
  j = good;
  j["launches"][0]["grid"] = {"1", "2"};
  EXPECT_NE(read_error(j).message().find("manifest.launches[0].grid: expected an array of 3"),
            std::string::npos);
  j = good;
  j["weights"][0]["offset"] = -5;
  EXPECT_EQ(read_error(j).message(), "manifest.weights[0].offset: integer -5 is out of range");
  j = good;
  j["kernels"][0]["registers"] = 1ull << 40;  // does not fit the int field
  EXPECT_NE(read_error(j).message().find("manifest.kernels[0].registers: integer"),
            std::string::npos);
  j = good;
  j["model"]["eos_ids"][1] = "two";
  EXPECT_EQ(read_error(j).message(),
            "manifest.model.eos_ids: [1]: expected an integer, got \"two\"");
  j = good;
  j["kv_layout"]["dtype"] = "f17";
  EXPECT_EQ(read_error(j).message(), "manifest.kv_layout.dtype: unknown dtype \"f17\"");
  j = good;
  j["kernels"][0]["family"] = "rmsnorm_residul";
  EXPECT_NE(read_error(j).message().find("manifest.kernels[0].family"), std::string::npos);
  j = good;
  j["memory_plan"] = "big";
  EXPECT_EQ(read_error(j).message(), "manifest.memory_plan: expected an object, got \"big\"");
  EXPECT_EQ(read_error(json::array()).message(), "manifest: expected an object, got array");
}

// Replaces every value in the manifest, one at a time, by values of each other JSON type: the
// reader answers each with a status (gtest fails the test on an escaped exception).
TEST(PlanJson, EveryFieldOfEveryTypeIsChecked) {
  const json good = manifest_to_json(testing::make_sample_plan().plan, kBlobs);
  const json replacements[] = {nullptr, "x", -1, 1.5, true, json::array(), json::object()};
  int checked = 0, rejected = 0;
  std::function<void(const json::json_pointer&, const json&)> visit =
      [&](const json::json_pointer& at, const json& v) {
        for (const json& r : replacements) {
          if (r.type() == v.type()) continue;
          json j = good;
          j[at] = r;
          ++checked;
          if (!manifest_from_json(j).ok()) ++rejected;
        }
        if (v.is_object()) {
          for (auto it = v.begin(); it != v.end(); ++it) visit(at / it.key(), it.value());
        } else if (v.is_array()) {
          for (size_t i = 0; i < v.size(); ++i) visit(at / i, v[i]);
        }
      };
  visit(json::json_pointer(), good);
  EXPECT_GT(checked, 1000);
  // Most replacements are errors; the exceptions are optional fields (null memory_plan,
  // rope_scaling, alias_of), numbers where a float is also an integer field's type, and the
  // informational model summary.
  EXPECT_GT(rejected, checked * 8 / 10);
}

// The GEMV/cuBLASLt pair: the launch's and the GEMM's StepBound survive the round trip, a plan
// without bounds writes no "bound" field, and a malformed bound is an error naming it.
TEST(PlanJson, StepBoundsRoundTripAndAreChecked) {
  Plan p = testing::make_sample_plan().plan;
  const json plain = manifest_to_json(p, kBlobs);
  EXPECT_FALSE(plain["launches"][0].contains("bound"));
  EXPECT_FALSE(plain["gemms"][0].contains("bound"));
  p.launches[0].rule.bound = {"T", 0, 16};
  p.gemms[0].bound = {"S+1", 17, 0};
  const json j = manifest_to_json(p, kBlobs);
  absl::StatusOr<Manifest> m = manifest_from_json(j);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(manifest_to_json(m->plan, m->blobs), j);
  EXPECT_EQ(m->plan.launches[0].rule.bound, (StepBound{"T", 0, 16}));
  EXPECT_EQ(m->plan.gemms[0].bound, (StepBound{"S+1", 17, 0}));
  EXPECT_TRUE(m->plan.launches[1].rule.bound.empty());

  json bad = j;
  bad["launches"][0]["bound"]["expr"] = "";
  EXPECT_EQ(read_error(bad).message(), "manifest.launches[0].bound.expr: empty expression");
  bad = j;
  bad["gemms"][0]["bound"]["min"] = 0;
  EXPECT_EQ(read_error(bad).message(), "manifest.gemms[0].bound: neither min nor max is set");
  bad = j;
  bad["launches"][0]["bound"]["min"] = 20;
  EXPECT_EQ(read_error(bad).message(), "manifest.launches[0].bound: min 20 > max 16");
  bad = j;
  bad["gemms"][0]["bound"]["max"] = -3;
  EXPECT_EQ(read_error(bad).message(), "manifest.gemms[0].bound: negative limit (min 17, max -3)");
  bad = j;
  bad["gemms"][0]["bound"].erase("max");
  EXPECT_EQ(read_error(bad).message(), "manifest.gemms[0].bound.max: missing");
  bad = j;
  bad["launches"][0]["bound"] = "T<=16";
  EXPECT_EQ(read_error(bad).message(),
            "manifest.launches[0].bound: expected an object, got \"T<=16\"");
  bad = j;
  bad["gemms"][0]["bound"] = nullptr;  // null = no bound, like an absent field
  absl::StatusOr<Manifest> unbounded = manifest_from_json(bad);
  ASSERT_TRUE(unbounded.ok()) << unbounded.status();
  EXPECT_TRUE(unbounded->plan.gemms[0].bound.empty());
}

// A tensor-parallel plan: its rank count, collectives, per-rank weights and column parts survive
// the round trip; a rank outside the plan's, a part naming both axes, an unknown collective and
// a rank count out of range are errors naming the field.
TEST(PlanJson, TensorParallelFieldsRoundTripAndAreChecked) {
  Plan p = testing::make_sample_plan().plan;
  p.ranks = 2;
  p.collectives.push_back({7, CollectiveKind::kAllReduce, DType::kBF16, "%6", "%7", "T", 64});
  p.collectives.push_back({9, CollectiveKind::kAllGather, DType::kF32, "%8", "%9", "S", 16});
  for (int r = 0; r < 2; ++r) {
    PlanWeight w;
    w.name = "o.shard";
    w.rank = r;
    w.dtype = DType::kBF16;
    w.shape = {32, 32};
    w.parts = {{"embed", SliceAxis::kCols, 32 * r, 32 * r + 32}};
    p.weights.push_back(w);
  }
  const json j = manifest_to_json(p, kBlobs);
  absl::StatusOr<Manifest> m = manifest_from_json(j);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(manifest_to_json(m->plan, m->blobs), j);
  const Plan& r = m->plan;
  EXPECT_EQ(r.ranks, 2);
  ASSERT_EQ(r.collectives.size(), 2u);
  EXPECT_EQ(r.collectives[1].kind, CollectiveKind::kAllGather);
  EXPECT_EQ(r.collectives[1].outer, "S");
  EXPECT_EQ(r.collectives[0].inner, 64);
  EXPECT_EQ(r.weights[0].rank, -1);  // every rank holds the embedding
  EXPECT_EQ(r.find_weight("o.shard", 1), &r.weights[3]);
  EXPECT_EQ(r.find_weight("o.shard", 0)->parts[0],
            (PlanWeightPart{"embed", SliceAxis::kCols, 0, 32}));
  EXPECT_EQ(r.find_weight("o.shard"), nullptr);  // no rank-independent weight of that name
  EXPECT_EQ(r.find_weight("embed", 1), &r.weights[0]);
  EXPECT_EQ(j["weights"][2]["parts"][0]["cols"], json::array({0, 32}));

  auto error_with = [&](const std::function<void(json&)>& edit) {
    json bad = j;
    edit(bad);
    return std::string(manifest_from_json(bad).status().message());
  };
  EXPECT_EQ(error_with([](json& b) { b["weights"][3]["rank"] = 2; }),
            "manifest.weights[3].rank: must be -1 (every rank) or a rank below 2");
  EXPECT_EQ(error_with([](json& b) { b["ranks"] = 0; }),
            "manifest.ranks: must be in [1, 1024], got 0");
  EXPECT_EQ(error_with([](json& b) {
              b["weights"][2]["parts"][0]["rows"] = {0, 1};
            }),
            "manifest.weights[2].parts[0].rows: a part is rows or cols");
  EXPECT_EQ(error_with([](json& b) {
              b["weights"][2]["parts"][0]["cols"] = {5, 1};
            }),
            "manifest.weights[2].parts[0].cols: must be [begin, end] with 0 <= begin <= end");
  EXPECT_EQ(error_with([](json& b) { b["collectives"][0]["kind"] = "all_to_all"; }),
            "manifest.collectives[0].kind: expected one of all_reduce, all_gather, got "
            "\"all_to_all\"");
  EXPECT_EQ(error_with([](json& b) { b["collectives"][0]["inner"] = -1; }),
            "manifest.collectives[0].inner: must be >= 0");
  // A plan of one rank reads back with no collectives.
  const Plan one = testing::make_sample_plan().plan;
  absl::StatusOr<Manifest> m1 = manifest_from_json(manifest_to_json(one, kBlobs));
  ASSERT_TRUE(m1.ok());
  EXPECT_EQ(m1->plan.ranks, 1);
  EXPECT_TRUE(m1->plan.collectives.empty());
}

TEST(PlanJson, DumpReplacesInvalidUtf8) {
  Plan p = testing::make_sample_plan().plan;
  p.model.source_architecture = std::string("llama\xff\xfe", 7);
  const std::string text = dump_manifest(manifest_to_json(p, {}));
  EXPECT_NE(text.find("llama\xef\xbf\xbd"), std::string::npos);  // U+FFFD
}

TEST(PlanJson, EnumNames) {
  EXPECT_EQ(parse_gemm_epilogue("bias_residual"), GemmEpilogue::kBiasResidual);
  EXPECT_EQ(parse_gemm_epilogue("bias+residual"), std::nullopt);
  for (GemmEpilogue e : {GemmEpilogue::kNone, GemmEpilogue::kBias, GemmEpilogue::kResidual,
                         GemmEpilogue::kBiasResidual}) {
    EXPECT_EQ(parse_gemm_epilogue(gemm_epilogue_name(e)), e);
  }
  for (int f = 0; f <= static_cast<int>(KernelFamily::kCascadeSuffix); ++f) {
    const KernelFamily family = static_cast<KernelFamily>(f);
    EXPECT_EQ(family_from_name(family_name(family)), family);
  }
  EXPECT_EQ(family_from_name("nope"), std::nullopt);
}

}  // namespace
}  // namespace kiln
