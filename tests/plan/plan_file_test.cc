// Plan files: round trip, and clear errors (never crashes; the test build runs under ASan) for
// truncations, random byte flips in the header and manifest, bad blob offsets and indices,
// another arch or NVRTC major, an older format, and weight files that moved or changed.
#include "plan/plan_file.h"

#include <gtest/gtest.h>
#include <xxhash.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>

#include "plan/plan_summary.h"
#include "tests/plan/plan_test_util.h"

namespace kiln {
namespace {

using nlohmann::json;

TEST(PlanFile, RoundTrip) {
  testing::SamplePlan s = testing::make_sample_plan();
  const std::string bytes = serialize_plan(s.plan, s.blobs);
  EXPECT_EQ(bytes.compare(0, 5, "KPLAN"), 0);
  absl::StatusOr<LoadedPlan> p = parse_plan(bytes, {});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->plan.format_version, kPlanFormatVersion);
  EXPECT_EQ(manifest_to_json(p->plan, {}), manifest_to_json(
                                               [&] {
                                                 Plan v = s.plan;
                                                 v.format_version = kPlanFormatVersion;
                                                 return v;
                                               }(),
                                               {}));
  ASSERT_EQ(p->blobs.size(), s.blobs.size());
  for (size_t i = 0; i < s.blobs.size(); ++i) {
    EXPECT_EQ(p->blob(static_cast<int>(i)), s.blobs[i].bytes);
    EXPECT_EQ(p->blobs[i].name, s.blobs[i].name);
    EXPECT_EQ((p->blob_base + p->blobs[i].offset) % kPlanAlignment, 0u);
  }
  EXPECT_EQ(p->blob(-1), "");
  EXPECT_EQ(p->blob(99), "");
  EXPECT_EQ(p->find_blob("k.cu"), 2);
  EXPECT_EQ(p->find_blob("nope"), -1);
  // Through a file, with weight checksums.
  const std::string path = testing::unique_temp_path("rt.kplan");
  ASSERT_TRUE(write_plan(path, s.plan, s.blobs).ok());
  PlanLoadOptions o;
  o.weights = WeightCheck::kChecksum;
  absl::StatusOr<LoadedPlan> f = read_plan(path, o);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->bytes, bytes);
  // The CLI views read the typed plan.
  const std::string summary = plan_summary(*f);
  EXPECT_NE(summary.find("sm_90a"), std::string::npos) << summary;
  EXPECT_NE(summary.find("page 32 tokens"), std::string::npos) << summary;
  EXPECT_NE(summary.find("bias_residual"), std::string::npos) << summary;
  EXPECT_NE(plan_kernel_list(*f).find("k "), std::string::npos);
  EXPECT_EQ(*plan_kernel_source(*f, "k"), s.blobs[2].bytes);
  EXPECT_EQ(*plan_kernel_source(*f, "k", /*ptx=*/true), s.blobs[1].bytes);
  EXPECT_FALSE(plan_kernel_source(*f, "nope").ok());
}

TEST(PlanFile, EveryTruncationIsAClearError) {
  testing::SamplePlan s = testing::make_sample_plan();
  const std::string bytes = serialize_plan(s.plan, s.blobs);
  for (size_t n = 0; n < bytes.size(); n += (n < 600 ? 1 : 97)) {
    absl::StatusOr<LoadedPlan> p = parse_plan(bytes.substr(0, n), {});
    ASSERT_FALSE(p.ok()) << "truncated to " << n;
    EXPECT_NE(p.status().message().find("kiln compile"), std::string::npos) << p.status();
  }
}

TEST(PlanFile, ByteFlipsInHeaderAndManifestAreCaught) {
  testing::SamplePlan s = testing::make_sample_plan();
  const std::string bytes = serialize_plan(s.plan, s.blobs);
  uint64_t len = 0;
  std::memcpy(&len, bytes.data() + 9, 8);
  std::mt19937 rng(1234);
  for (int i = 0; i < 3000; ++i) {
    std::string b = bytes;
    const size_t pos = rng() % (17 + len);
    b[pos] = static_cast<char>(b[pos] ^ (1 << (rng() % 8)));
    EXPECT_FALSE(parse_plan(b, {}).ok()) << "flip at " << pos;
  }
  // Flips anywhere (blobs and padding too) never crash.
  for (int i = 0; i < 2000; ++i) {
    std::string b = bytes;
    const size_t pos = rng() % b.size();
    b[pos] = static_cast<char>(rng());
    (void)parse_plan(b, {});
  }
}

// The file of `s` with its manifest JSON edited by `edit` (checksum fixed, blobs kept), to reach
// the checks behind the checksum.
std::string with_manifest(const testing::SamplePlan& s, const std::function<void(json&)>& edit) {
  const std::string bytes = serialize_plan(s.plan, s.blobs);
  uint64_t len = 0;
  std::memcpy(&len, bytes.data() + 9, 8);
  json m = json::parse(bytes.substr(17, len));
  edit(m);
  const std::string text = m.dump(1);
  std::string out = bytes.substr(0, 9);
  const uint64_t nlen = text.size();
  out.append(reinterpret_cast<const char*>(&nlen), 8);
  out += text;
  const uint64_t base = (out.size() + 255) / 256 * 256;
  const uint64_t old_base = (17 + len + 255) / 256 * 256;
  out.resize(base, '\0');
  const uint64_t mh = XXH3_64bits(text.data(), text.size());
  out.append(reinterpret_cast<const char*>(&mh), 8);
  out += bytes.substr(old_base + 8);
  return out;
}

std::string load_error(const std::string& bytes) {
  absl::StatusOr<LoadedPlan> p = parse_plan(bytes, {});
  return p.ok() ? "ok" : std::string(p.status().message());
}

TEST(PlanFile, BadOffsetsIndicesAndFieldsNamed) {
  testing::SamplePlan s = testing::make_sample_plan();
  EXPECT_EQ(load_error(with_manifest(s, [](json&) {})), "ok");
  EXPECT_NE(load_error(with_manifest(s, [](json& m) { m["blobs"][0]["offset"] = 1ull << 40; }))
                .find("outside"),
            std::string::npos);
  EXPECT_NE(load_error(with_manifest(s,
                                     [](json& m) {
                                       m["blobs"][1]["size"] =
                                           m["blobs"][1]["size"].get<uint64_t>() + 1;
                                     }))
                .find("checksum"),
            std::string::npos);
  EXPECT_NE(load_error(with_manifest(s, [](json& m) { m["kernels"][0]["cubin_blob"] = 99; }))
                .find("manifest.kernels[0].cubin_blob names blob 99 of 4"),
            std::string::npos);
  EXPECT_NE(load_error(with_manifest(s, [](json& m) { m["weights"][1]["blob"] = 4; }))
                .find("manifest.weights[1].blob"),
            std::string::npos);
  EXPECT_NE(load_error(with_manifest(s, [](json& m) { m["launches"][0]["kernel"] = 1; }))
                .find("manifest.launches[0].kernel names kernel 1 of 1"),
            std::string::npos);
  EXPECT_NE(load_error(with_manifest(s, [](json& m) { m["launches"][1]["args"].erase(0); }))
                .find("manifest.launches[1] passes 3 arguments to k, which takes 4"),
            std::string::npos);
  const std::string missing = load_error(with_manifest(s, [](json& m) { m.erase("arch"); }));
  EXPECT_NE(missing.find("manifest.arch: missing"), std::string::npos) << missing;
  EXPECT_NE(missing.find("kiln compile"), std::string::npos) << missing;
  EXPECT_NE(load_error(with_manifest(s, [](json& m) { m["format_version"] = 1; }))
                .find("disagrees with the header"),
            std::string::npos);
}

TEST(PlanFile, ArchToolchainAndFormatMismatchSayHowToRebuild) {
  testing::SamplePlan s = testing::make_sample_plan();
  const std::string bytes = serialize_plan(s.plan, s.blobs);
  PlanLoadOptions o;
  o.device_arch = "sm_80";
  o.plan_path_for_messages = "m.kplan";
  absl::StatusOr<LoadedPlan> p = parse_plan(bytes, o);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(
      p.status().message(),
      "plan built for sm_90a, this GPU is sm_80: kiln compile --arch sm_80 <model> -o m.kplan");
  o = {};
  o.nvrtc_major = 12;
  p = parse_plan(bytes, o);
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("NVRTC 13.0"), std::string::npos);
  std::string b = bytes;
  b[5] = 1;  // a version-1 plan (untyped manifest) from an older kiln
  p = parse_plan(b, {});
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("format version 1"), std::string::npos);
  EXPECT_NE(p.status().message().find("kiln compile"), std::string::npos);
  b[5] = 3;  // version 3: before cascade attention's launches (a runtime now takes them)
  p = parse_plan(b, {});
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("format version 3"), std::string::npos) << p.status();
  EXPECT_NE(p.status().message().find("kiln compile"), std::string::npos);
}

TEST(PlanFile, WeightFilesChecked) {
  testing::SamplePlan s = testing::make_sample_plan();
  const std::string bytes = serialize_plan(s.plan, s.blobs);
  PlanLoadOptions o;
  o.weights = WeightCheck::kChecksum;
  ASSERT_TRUE(parse_plan(bytes, o).ok());
  {  // same size, different bytes: only the checksum notices
    std::fstream f(s.weight_file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put('X');
  }
  EXPECT_TRUE(parse_plan(bytes, {}).ok());
  absl::StatusOr<LoadedPlan> p = parse_plan(bytes, o);
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("checkpoint changed"), std::string::npos);
  EXPECT_NE(p.status().message().find(s.weight_file), std::string::npos);
  std::filesystem::resize_file(s.weight_file, 100);
  p = parse_plan(bytes, {});
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("is 100 bytes"), std::string::npos);
  std::filesystem::remove(s.weight_file);
  p = parse_plan(bytes, {});
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("moved or deleted"), std::string::npos);
  // kNone skips the files (kiln ir of a plan whose checkpoint is elsewhere).
  o.weights = WeightCheck::kNone;
  EXPECT_TRUE(parse_plan(bytes, o).ok());
  EXPECT_FALSE(check_plan_weights(s.plan, WeightCheck::kSize).ok());
}

}  // namespace
}  // namespace kiln
