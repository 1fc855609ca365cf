// Plan files: round trip, and clear errors (never crashes; the test build runs under ASan) for
// truncations, random byte flips in the header and manifest, bad blob offsets, another arch or
// NVRTC major, and weight files that moved or changed. Ends with `kiln compile`'s library entry.
#include "codegen/plan_file.h"

#include <gtest/gtest.h>
#include <xxhash.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "codegen/compile_model.h"
#include "codegen/nvrtc_compiler.h"
#include "codegen/plan_summary.h"
#include "tests/codegen/codegen_test_util.h"

namespace kiln {
namespace {

std::string temp_path(const std::string& name) {
  return ::testing::TempDir() + "/kiln-plan-" + std::to_string(::getpid()) + "-" + name;
}

// A small valid plan: one kernel (three blobs) and one weight referenced from a file.
struct Sample {
  nlohmann::json manifest;
  std::string bytes;
  std::string weight_file;
};

Sample make_sample() {
  Sample s;
  s.weight_file = temp_path("weights.bin");
  std::string wbytes(4096, '\0');
  for (size_t i = 0; i < wbytes.size(); ++i) wbytes[i] = static_cast<char>(i * 7 + 3);
  std::ofstream(s.weight_file, std::ios::binary) << wbytes;
  PlanWriter w;
  const int cubin = w.add_blob("k.cubin", std::string(1000, 'c'));
  const int ptx = w.add_blob("k.ptx", "// ptx mma.sync");
  const int src = w.add_blob("k.cu", "extern \"C\" __global__ void k() {}");
  s.manifest = {
      {"format_version", kPlanFormatVersion},
      {"kiln_version", "0.1.0"},
      {"arch", "sm_90a"},
      {"nvrtc_version", "13.0"},
      {"model", {{"summary", "llama: test"}}},
      {"ir", "graph @g {\n}\n"},
      {"kernels",
       {{{"key", "k"},
         {"entry", "k"},
         {"family", "rope"},
         {"cubin_blob", cubin},
         {"ptx_blob", ptx},
         {"source_blob", src},
         {"registers", 32},
         {"shared_bytes", 0}}}},
      {"launches", nlohmann::json::array()},
      {"gemms", nlohmann::json::array()},
      {"kv_plan", {{"page_size", 16}, {"layout", "NHD"}}},
      {"weights",
       {{{"name", "embed"},
         {"dtype", "bf16"},
         {"shape", {32, 64}},
         {"file", s.weight_file},
         {"offset", 0},
         {"size", 4096},
         {"xxh3", XXH3_64bits(wbytes.data(), wbytes.size())}}}},
  };
  s.bytes = w.serialize(s.manifest);
  return s;
}

TEST(PlanFile, RoundTrip) {
  Sample s = make_sample();
  absl::StatusOr<LoadedPlan> p = parse_plan(s.bytes, {});
  ASSERT_TRUE(p.ok()) << p.status();
  nlohmann::json m = p->manifest;
  m.erase("blobs");
  EXPECT_EQ(m, s.manifest);
  EXPECT_EQ(p->blob(0), std::string(1000, 'c'));
  EXPECT_EQ(p->blob(1), "// ptx mma.sync");
  EXPECT_EQ(p->find_blob("k.cu"), 2);
  EXPECT_EQ(s.bytes.compare(0, 5, "KPLAN"), 0);
  for (const nlohmann::json& b : p->manifest["blobs"]) {
    EXPECT_EQ((p->blob_base + b["offset"].get<uint64_t>()) % kPlanAlignment, 0u);
  }
  // Through a file, with weight checksums.
  const std::string path = temp_path("rt.kplan");
  PlanWriter w;
  w.add_blob("k.cubin", std::string(1000, 'c'));
  w.add_blob("k.ptx", "// ptx mma.sync");
  w.add_blob("k.cu", "extern \"C\" __global__ void k() {}");
  ASSERT_TRUE(w.write(path, s.manifest).ok());
  PlanLoadOptions o;
  o.weights = WeightCheck::kChecksum;
  absl::StatusOr<LoadedPlan> f = read_plan(path, o);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->manifest, p->manifest);
  EXPECT_NE(plan_summary(*f).find("sm_90a"), std::string::npos);
  EXPECT_NE(plan_kernel_list(*f).find("k "), std::string::npos);
  EXPECT_EQ(*plan_kernel_source(*f, "k"), "extern \"C\" __global__ void k() {}");
  EXPECT_FALSE(plan_kernel_source(*f, "nope").ok());
}

TEST(PlanFile, EveryTruncationIsAClearError) {
  Sample s = make_sample();
  for (size_t n = 0; n < s.bytes.size(); n += (n < 600 ? 1 : 97)) {
    absl::StatusOr<LoadedPlan> p = parse_plan(s.bytes.substr(0, n), {});
    ASSERT_FALSE(p.ok()) << "truncated to " << n;
    EXPECT_NE(p.status().message().find("kiln compile"), std::string::npos) << p.status();
  }
}

TEST(PlanFile, ByteFlipsInHeaderAndManifestAreCaught) {
  Sample s = make_sample();
  uint64_t len = 0;
  std::memcpy(&len, s.bytes.data() + 9, 8);
  std::mt19937 rng(1234);
  for (int i = 0; i < 3000; ++i) {
    std::string b = s.bytes;
    const size_t pos = rng() % (17 + len);
    b[pos] = static_cast<char>(b[pos] ^ (1 << (rng() % 8)));
    absl::StatusOr<LoadedPlan> p = parse_plan(b, {});
    EXPECT_FALSE(p.ok()) << "flip at " << pos;
  }
  // Flips anywhere (blobs and padding too) never crash.
  for (int i = 0; i < 2000; ++i) {
    std::string b = s.bytes;
    const size_t pos = rng() % b.size();
    b[pos] = static_cast<char>(rng());
    (void)parse_plan(b, {});
  }
}

// A manifest that is well-formed JSON with a consistent checksum but wrong contents.
std::string reserialize(nlohmann::json m, const std::string& original) {
  // Rebuild with the same blobs, then patch the blob table in.
  absl::StatusOr<LoadedPlan> p = parse_plan(original, {});
  PlanWriter w;
  for (size_t i = 0; i < p->manifest["blobs"].size(); ++i) {
    w.add_blob(p->manifest["blobs"][i]["name"], std::string(p->blob(static_cast<int>(i))));
  }
  nlohmann::json blobs = m.value("blobs", nlohmann::json());
  std::string bytes = w.serialize(m);
  if (blobs.is_null()) return bytes;
  // Overwrite the generated table with the given one and fix the manifest checksum.
  uint64_t len = 0;
  std::memcpy(&len, bytes.data() + 9, 8);
  nlohmann::json written = nlohmann::json::parse(bytes.substr(17, len));
  written["blobs"] = blobs;
  const std::string mtext = written.dump(1);
  std::string out = bytes.substr(0, 9);
  const uint64_t nlen = mtext.size();
  out.append(reinterpret_cast<const char*>(&nlen), 8);
  out += mtext;
  const uint64_t base = (out.size() + 255) / 256 * 256;
  const uint64_t old_base = (17 + len + 255) / 256 * 256;
  out.resize(base, '\0');
  const uint64_t mh = XXH3_64bits(mtext.data(), mtext.size());
  out.append(reinterpret_cast<const char*>(&mh), 8);
  out += bytes.substr(old_base + 8);
  return out;
}

TEST(PlanFile, BadOffsetsAndFieldsNamed) {
  Sample s = make_sample();
  absl::StatusOr<LoadedPlan> p = parse_plan(s.bytes, {});
  ASSERT_TRUE(p.ok());
  nlohmann::json m = p->manifest;
  m["blobs"][0]["offset"] = 1ull << 40;
  absl::StatusOr<LoadedPlan> bad = parse_plan(reserialize(m, s.bytes), {});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("outside"), std::string::npos) << bad.status();
  m = p->manifest;
  m["blobs"][1]["size"] = m["blobs"][1]["size"].get<uint64_t>() + 1;
  bad = parse_plan(reserialize(m, s.bytes), {});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("checksum"), std::string::npos) << bad.status();
  m = p->manifest;
  m["kernels"][0]["cubin_blob"] = 99;
  bad = parse_plan(reserialize(m, s.bytes), {});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("kernels[0].cubin_blob"), std::string::npos);
  m = p->manifest;
  m.erase("arch");
  bad = parse_plan(reserialize(m, s.bytes), {});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("manifest.arch missing"), std::string::npos);
}

TEST(PlanFile, ArchAndToolchainMismatchSayHowToRebuild) {
  Sample s = make_sample();
  PlanLoadOptions o;
  o.device_arch = "sm_80";
  o.plan_path_for_messages = "m.kplan";
  absl::StatusOr<LoadedPlan> p = parse_plan(s.bytes, o);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(
      p.status().message(),
      "plan built for sm_90a, this GPU is sm_80: kiln compile --arch sm_80 <model> -o m.kplan");
  o = {};
  o.nvrtc_major = 12;
  p = parse_plan(s.bytes, o);
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("NVRTC 13.0"), std::string::npos);
  std::string b = s.bytes;
  b[5] = 9;  // version
  p = parse_plan(b, {});
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("format version 9"), std::string::npos);
}

TEST(PlanFile, WeightFilesChecked) {
  Sample s = make_sample();
  PlanLoadOptions o;
  o.weights = WeightCheck::kChecksum;
  ASSERT_TRUE(parse_plan(s.bytes, o).ok());
  {  // same size, different bytes: only the checksum notices
    std::fstream f(s.weight_file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put('X');
  }
  EXPECT_TRUE(parse_plan(s.bytes, {}).ok());
  absl::StatusOr<LoadedPlan> p = parse_plan(s.bytes, o);
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("checkpoint changed"), std::string::npos);
  std::filesystem::resize_file(s.weight_file, 100);
  p = parse_plan(s.bytes, {});
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("is 100 bytes"), std::string::npos);
  std::filesystem::remove(s.weight_file);
  p = parse_plan(s.bytes, {});
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("moved or deleted"), std::string::npos);
}

TEST(CompileModel, TinyModelFromFusedIrRoundTrips) {
  if (!nvrtc_available()) GTEST_SKIP() << "built without NVRTC";
  CompileOptions o;
  o.model = testing::fixture("tiny");
  o.from_ir = testing::codegen_testdata("smollm2_fused.kir");
  o.output = temp_path("tiny.kplan");
  o.arch = "sm_80";
  o.cache_dir = testing::fixture_kernel_cache();
  absl::StatusOr<CompileReport> r = compile_model(o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->kernels, 12);
  PlanLoadOptions lo;
  lo.weights = WeightCheck::kChecksum;
  lo.device_arch = "sm_80";
  absl::StatusOr<LoadedPlan> p = read_plan(o.output, lo);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->manifest["kernels"].size(), 12u);
  EXPECT_GT(p->manifest["weights"].size(), 0u);
  EXPECT_NE(p->manifest["ir"].get<std::string>().find("flash_attention"), std::string::npos);
  absl::StatusOr<std::string> ptx =
      plan_kernel_source(*p, "flash_attention_prefill_bf16_d64_g3_q64_kv64_w4", true);
  ASSERT_TRUE(ptx.ok());
  EXPECT_NE(ptx->find("mma.sync"), std::string::npos);
  // Packed weights live in blobs.
  o.pack_weights = true;
  o.output = temp_path("tiny-packed.kplan");
  ASSERT_TRUE(compile_model(o).ok());
  p = read_plan(o.output, lo);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE(p->manifest["weights"][0].contains("blob"));
  // A bad arch is refused up front.
  o.arch = "sm_70";
  EXPECT_FALSE(compile_model(o).ok());
}

}  // namespace
}  // namespace kiln
