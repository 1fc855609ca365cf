// NVRTC compiles every kernel family the fused SmolLM2 graph (head_dim 64, 9/3 heads, bf16) and a
// head_dim-128 f16 graph with llama3 rope need, for sm_80 and sm_90a; attention PTX uses tensor
// cores; compile errors show the generated source; the kernel cache hits, keys and locks. Compiled
// kernels persist in the fixtures folder's kernel cache across runs. No GPU is needed.
#include "codegen/nvrtc_compiler.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <thread>

#include "codegen/cubin_info.h"
#include "codegen/kernel_cache.h"
#include "codegen/kernel_source.h"
#include "codegen/lowering.h"
#include "tests/codegen/codegen_test_util.h"

namespace kiln {
namespace {

#define SKIP_WITHOUT_NVRTC() \
  if (!nvrtc_available()) GTEST_SKIP() << "built without NVRTC"

// The fused graphs of the two test models, as `kiln compile` makes them.
std::unique_ptr<Graph> model_graph(const std::string& model) {
  if (model == "smollm2") return testing::fused_graph(testing::smollm2_config(), DType::kBF16);
  return testing::fused_graph(testing::d128_llama3_config(), DType::kF16);
}

std::vector<KernelJob> jobs_for(const std::string& model) {
  std::unique_ptr<Graph> g = model_graph(model);
  EXPECT_NE(g, nullptr);
  if (!g) return {};
  absl::StatusOr<LoweredGraph> l = lower_graph(*g);
  EXPECT_TRUE(l.ok()) << l.status();
  std::vector<KernelJob> jobs;
  for (const auto& s : l->specs) {
    absl::StatusOr<std::string> src = emit_kernel_source(*s);
    EXPECT_TRUE(src.ok()) << s->key() << ": " << src.status();
    jobs.push_back({s->key(), *src});
  }
  return jobs;
}

class CompileAll : public ::testing::TestWithParam<std::tuple<std::string, std::string>> {};

TEST_P(CompileAll, EveryKernelCompiles) {
  SKIP_WITHOUT_NVRTC();
  const auto& [kir, arch] = GetParam();
  std::vector<KernelJob> jobs = jobs_for(kir);
  ASSERT_FALSE(jobs.empty());
  KernelCache cache(testing::fixture_kernel_cache());
  BuildStats stats;
  absl::StatusOr<std::vector<CompiledKernel>> built = build_kernels(jobs, arch, &cache, 0, &stats);
  ASSERT_TRUE(built.ok()) << built.status();
  bool saw_attention = false;
  for (const CompiledKernel& k : *built) {
    EXPECT_GT(k.cubin.size(), 0u) << k.name;
    EXPECT_NE(k.ptx.find(".entry " + k.name), std::string::npos) << k.name;
    EXPECT_GT(k.registers, 0) << k.name << "\n" << k.log;
    EXPECT_EQ(k.spill_bytes, 0) << k.name << " spills registers:\n" << k.log;
    if (k.name.rfind("flash_attention_prefill", 0) == 0 ||
        k.name.rfind("flash_attention_decode", 0) == 0) {
      saw_attention = true;
      EXPECT_NE(k.ptx.find("mma.sync.aligned.m16n8k16"), std::string::npos) << k.name;
      EXPECT_GT(k.shared_bytes, 0) << k.name;
      EXPECT_LE(k.shared_bytes, 48 * 1024) << k.name << ": above the static shared-memory limit";
    }
  }
  EXPECT_TRUE(saw_attention);
}

INSTANTIATE_TEST_SUITE_P(Models, CompileAll,
                         ::testing::Combine(::testing::Values("smollm2", "d128_llama3_f16"),
                                            ::testing::Values("sm_80", "sm_90a")),
                         [](const auto& info) {
                           std::string n = std::get<0>(info.param) + "_" + std::get<1>(info.param);
                           for (char& c : n)
                             c = std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
                           return n;
                         });

TEST(Nvrtc, ArchChecked) {
  EXPECT_TRUE(check_arch("sm_90a").ok());
  EXPECT_TRUE(check_arch("sm_89").ok());
  absl::Status s = check_arch("sm_75");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("sm_90a, sm_89, sm_80"), std::string::npos);
}

TEST(Nvrtc, ErrorShowsKeyAndSourceLines) {
  SKIP_WITHOUT_NVRTC();
  const std::string src =
      "// line 1\n#include \"common.cuh\"\nextern \"C\" __global__ void bad_kernel(float* x) {\n"
      "  x[0] = undeclared_name;\n}\n";
  absl::StatusOr<CompiledKernel> k = nvrtc_compile("bad_kernel", src, "sm_80");
  ASSERT_FALSE(k.ok());
  const std::string msg(k.status().message());
  EXPECT_NE(msg.find("kernel bad_kernel failed to compile for sm_80"), std::string::npos) << msg;
  EXPECT_NE(msg.find(">> 4 |   x[0] = undeclared_name;"), std::string::npos) << msg;
}

TEST(Nvrtc, PtxasInfoParsed) {
  CompiledKernel k;
  parse_ptxas_info(
      "ptxas         .     8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads\n"
      "ptxas info    : Used 72 registers, used 1 barriers, 34816 bytes smem\n",
      k);
  EXPECT_EQ(k.registers, 72);
  EXPECT_EQ(k.shared_bytes, 34816);
  EXPECT_EQ(k.stack_bytes, 8);
  EXPECT_EQ(k.spill_bytes, 4);
}

const char* kSmall =
    "#include \"common.cuh\"\nextern \"C\" __global__ void small(float* x) { x[threadIdx.x] *= "
    "2.f; }\n";

std::string fresh_dir(const std::string& name) {
  std::string d = ::testing::TempDir() + "/kiln-" + name + "-" + std::to_string(::getpid());
  std::filesystem::remove_all(d);
  return d;
}

TEST(KernelCache, SecondCompileIsAHitWithoutNvrtc) {
  SKIP_WITHOUT_NVRTC();
  KernelCache cache(fresh_dir("hit"));
  bool hit = true;
  const int64_t before = nvrtc_compile_count();
  absl::StatusOr<CompiledKernel> a = cache.get_or_compile("small", kSmall, "sm_80", &hit);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_FALSE(hit);
  EXPECT_EQ(nvrtc_compile_count(), before + 1);
  absl::StatusOr<CompiledKernel> b = cache.get_or_compile("small", kSmall, "sm_80", &hit);
  ASSERT_TRUE(b.ok());
  EXPECT_TRUE(hit);
  EXPECT_EQ(nvrtc_compile_count(), before + 1);  // no NVRTC call
  EXPECT_EQ(a->cubin, b->cubin);
  EXPECT_EQ(a->registers, b->registers);
  // Another arch misses.
  ASSERT_TRUE(cache.get_or_compile("small", kSmall, "sm_90a", &hit).ok());
  EXPECT_FALSE(hit);
  EXPECT_EQ(nvrtc_compile_count(), before + 2);
}

TEST(KernelCache, CorruptEntryIsRebuilt) {
  SKIP_WITHOUT_NVRTC();
  const std::string dir = fresh_dir("corrupt");
  KernelCache cache(dir);
  ASSERT_TRUE(cache.get_or_compile("small", kSmall, "sm_80").ok());
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.path().extension() == ".kcubin") std::filesystem::resize_file(e.path(), 40);
  }
  bool hit = true;
  ASSERT_TRUE(cache.get_or_compile("small", kSmall, "sm_80", &hit).ok());
  EXPECT_FALSE(hit);
}

TEST(KernelCache, KeyCoversSourceArchVersionFlags) {
  const std::vector<std::string> f = {"-a"};
  const std::string k = kernel_cache_key("src", "sm_80", "13.0", f);
  EXPECT_EQ(k.size(), 16u);
  EXPECT_EQ(k, kernel_cache_key("src", "sm_80", "13.0", f));
  EXPECT_NE(k, kernel_cache_key("src2", "sm_80", "13.0", f));
  EXPECT_NE(k, kernel_cache_key("src", "sm_90a", "13.0", f));
  EXPECT_NE(k, kernel_cache_key("src", "sm_80", "13.1", f));
  EXPECT_NE(k, kernel_cache_key("src", "sm_80", "13.0", {"-b"}));
  EXPECT_NE(kernel_cache_key("ab", "c", "", {}), kernel_cache_key("a", "bc", "", {}));
}

TEST(KernelCache, TwoThreadsCompileOnce) {
  SKIP_WITHOUT_NVRTC();
  const std::string dir = fresh_dir("lock");
  const int64_t before = nvrtc_compile_count();
  bool hits[2] = {false, false};
  absl::Status status[2];
  std::vector<std::thread> ts;
  for (int i = 0; i < 2; ++i) {
    ts.emplace_back([&, i] {
      KernelCache cache(dir);  // separate objects: the flock, not a mutex, serializes them
      absl::StatusOr<CompiledKernel> k = cache.get_or_compile("small", kSmall, "sm_80", &hits[i]);
      status[i] = k.status();
    });
  }
  for (std::thread& t : ts) t.join();
  EXPECT_TRUE(status[0].ok()) << status[0];
  EXPECT_TRUE(status[1].ok()) << status[1];
  EXPECT_EQ(nvrtc_compile_count(), before + 1);
  EXPECT_NE(hits[0], hits[1]);  // one compiled, the other waited and hit
}

}  // namespace
}  // namespace kiln

namespace kiln {
namespace {

// The cubin's ELF attributes are the source of truth for resources; they must agree with what
// ptxas -v printed whenever it printed (here it does), for every kernel of both test models.
TEST(CubinInfo, AgreesWithPtxasForEveryKernel) {
  SKIP_WITHOUT_NVRTC();
  for (const char* kir : {"smollm2", "d128_llama3_f16"}) {
    for (const char* arch : {"sm_80", "sm_90a"}) {
      KernelCache cache(testing::fixture_kernel_cache());
      absl::StatusOr<std::vector<CompiledKernel>> built =
          build_kernels(jobs_for(kir), arch, &cache, 0, nullptr);
      ASSERT_TRUE(built.ok()) << built.status();
      for (const CompiledKernel& k : *built) {
        absl::StatusOr<CubinInfo> info = read_cubin_info(k.cubin, k.name);
        ASSERT_TRUE(info.ok()) << k.name << ": " << info.status();
        CompiledKernel from_log;
        parse_ptxas_info(k.log, from_log);
        EXPECT_GT(info->registers, 0) << k.name;
        if (from_log.registers == 0) continue;  // ptxas -v printed nothing (seen on the H200 box)
        EXPECT_EQ(info->registers, from_log.registers) << k.name << " " << arch;
        // On sm_90 a kernel's shared section also holds the 1 KiB the hardware reserves per
        // block (when the kernel uses shared memory at all); ptxas leaves it out of its report.
        // A kernel whose shared memory is all dynamic (cascade_prefix) reports 0 static bytes
        // and still has the reserve: with 0 from ptxas, the cubin holds 0 or the reserve.
        const bool sm90 = std::string(arch) == "sm_90a";
        if (sm90 && from_log.shared_bytes == 0) {
          EXPECT_TRUE(info->shared_bytes == 0 || info->shared_bytes == 1024)
              << k.name << " " << arch << ": " << info->shared_bytes;
        } else {
          EXPECT_EQ(info->shared_bytes, from_log.shared_bytes + (sm90 ? 1024 : 0))
              << k.name << " " << arch;
        }
        EXPECT_EQ(info->frame_bytes, from_log.stack_bytes) << k.name << " " << arch;
      }
    }
  }
}

TEST(CubinInfo, MalformedInputIsAnError) {
  EXPECT_FALSE(read_cubin_info("", "k").ok());
  EXPECT_FALSE(read_cubin_info(std::string("\x7f"
                                           "ELF\x02",
                                           5) +
                                   std::string(100, '\xff'),
                               "k")
                   .ok());
  std::string junk(4096, '\0');
  std::memcpy(junk.data(),
              "\x7f"
              "ELF\x02",
              5);
  EXPECT_FALSE(read_cubin_info(junk, "k").ok());
}

}  // namespace
}  // namespace kiln
