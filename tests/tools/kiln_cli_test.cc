// The `kiln` binary end to end: exit codes and messages for good and bad input.
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "runtime/cuda/driver.h"
#include "tests/fixtures.h"

namespace kiln {
namespace {

using ::testing::HasSubstr;

struct Result {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

// Runs kiln; `output` holds stdout and stderr together, or only stdout with stdout_only.
Result kiln(const std::string& args, bool stdout_only = false) {
  std::string cmd =
      std::string(KILN_BINARY) + " " + args + (stdout_only ? " 2>/dev/null" : " 2>&1");
  Result r;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.output.append(buf.data(), n);
  int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

std::string write_temp(const std::string& name, const std::string& text) {
  std::string path = testing::unique_temp_path(name);
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

TEST(KilnCli, Version) {
  Result r = kiln("--version");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr("kiln 0."));
}

TEST(KilnCli, BenchOfAMissingPlanSaysWhy) {
  Result r = kiln("bench /nonexistent/x.kplan --batch 2");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr("kiln bench: "));
  EXPECT_THAT(r.output, HasSubstr("x.kplan"));
}

TEST(KilnCli, ServeSaysWhatItCannotServe) {
  Result plan = kiln("serve /nonexistent/model.kplan");
  EXPECT_NE(plan.exit_code, 0);
  EXPECT_THAT(plan.output, HasSubstr("/nonexistent/model.kplan"));
  Result missing = kiln("serve /nonexistent/model.gguf --port 0");
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_THAT(missing.output, HasSubstr("/nonexistent/model.gguf"));
}

// --cascade auto|off on run, bench and serve (tools/run_backend.h): both run, other values are
// refused by name; `kiln bench --shared-prefix` forks the prompt's pages so that its decode steps
// run cascade attention under auto (the JSON says so) and plain decode under off.
TEST(KilnCli, CascadeFlag) {
  const std::string model = testing::fixture("tiny-llama3");  // a context of 1024 tokens
  const std::string args = " --prompt 'hello world' -n 4 --device cpu";
  Result on = kiln("run " + model + args + " --cascade auto", /*stdout_only=*/true);
  Result off = kiln("run " + model + args + " --cascade off", /*stdout_only=*/true);
  ASSERT_EQ(on.exit_code, 0) << on.output;
  ASSERT_EQ(off.exit_code, 0) << off.output;
  EXPECT_EQ(on.output, off.output);
  for (const std::string cmd : {"run " + model + args, "bench " + model + " --device cpu",
                                "serve " + model + " --port 0"}) {
    Result bad = kiln(cmd + " --cascade sometimes");
    EXPECT_NE(bad.exit_code, 0) << cmd;
    EXPECT_THAT(bad.output, HasSubstr("--cascade")) << cmd;
  }
  const std::string bench = "bench " + model +
                            " --device cpu --threads 2 --batch 3 --prompt-len 300 --gen-len 3 "
                            "--shared-prefix 288";
  Result cascade = kiln(bench + " --cascade auto", /*stdout_only=*/true);
  ASSERT_EQ(cascade.exit_code, 0) << cascade.output;
  EXPECT_THAT(cascade.output, HasSubstr("\"cascade\":true"));
  EXPECT_THAT(cascade.output, HasSubstr("\"shared_prefix\":288"));
  Result plain = kiln(bench + " --cascade off", /*stdout_only=*/true);
  ASSERT_EQ(plain.exit_code, 0) << plain.output;
  EXPECT_THAT(plain.output, HasSubstr("\"cascade\":false"));
  Result too_long = kiln("bench " + model + " --device cpu --prompt-len 8 --shared-prefix 8");
  EXPECT_NE(too_long.exit_code, 0);
  EXPECT_THAT(too_long.output, HasSubstr("--shared-prefix"));
}

TEST(KilnCli, IrPrintsVerifiedText) {
  Result r = kiln("ir --example");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr("graph @example_mlp_block {"));
  std::string path = write_temp("g.kir", r.output);
  Result again = kiln("ir " + path);
  EXPECT_EQ(again.exit_code, 0);
  EXPECT_EQ(again.output, r.output);
}

TEST(KilnCli, MalformedIrGetsLineAndColumn) {
  std::string path =
      write_temp("bad.kir", "graph @g {\n  input %x : f32[4]\n  %y = nope(%x) : f32[4]\n}\n");
  Result r = kiln("ir " + path);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr(":3:8: unknown op 'nope'"));
  std::string bad_type = write_temp("badtype.kir",
                                    "graph @g {\n  input %x : f32[4]\n  %y = neg(%x) : f32[5]\n"
                                    "  output y = %y\n}\n");
  r = kiln("ir " + bad_type);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output,
              HasSubstr("verification failed: %y = neg(%x) : f32[5]: result 0 is declared f32[5]"));
}

TEST(KilnCli, IrOfAModel) {
  Result r = kiln("ir " + testing::fixture("tiny-gqa"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("paged_qk("));
  EXPECT_THAT(r.output, HasSubstr("output logits = "));
}

TEST(KilnCli, RunGeneratesFromAFixture) {
  Result r = kiln("run " + testing::fixture("tiny") + " --prompt 'hello world' -n 5 --device cpu");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("generated at"));
}

// `kiln run x.kplan` reads the plan back (no recompile) and must print exactly what
// `kiln run <model>` prints for the same greedy request.
TEST(KilnCli, RunAPlanFileLikeTheModel) {
  for (const char* preset : {"tiny", "tiny-llama3"}) {
    const std::string model = testing::fixture(preset);
    const std::string plan = testing::unique_temp_path(std::string(preset) + ".kplan");
    Result c = kiln("compile " + model + " -o " + plan + " --cache-dir " +
                    testing::unique_temp_path("kernels"));
    ASSERT_EQ(c.exit_code, 0) << c.output;
    const std::string args = " --prompt 'hello world' -n 12 --device cpu";
    Result want = kiln("run " + model + args, /*stdout_only=*/true);
    Result got = kiln("run " + plan + args, /*stdout_only=*/true);
    ASSERT_EQ(want.exit_code, 0) << want.output;
    ASSERT_EQ(got.exit_code, 0) << got.output;
    EXPECT_GT(want.output.size(), 1u);
    EXPECT_EQ(got.output, want.output) << preset;
    std::filesystem::remove(plan);
  }
}

// `kiln compile --tp N` writes one plan holding every rank's kernels and weight slices, and
// `kiln run x.kplan --device cpu` runs all its ranks on the CPU with the tokens of the plan
// compiled for one GPU; `kiln ir --tp N` shows the shards and the collectives; `kiln inspect`
// each rank's memory; a --tp the heads do not allow is refused with what divides.
TEST(KilnCli, TensorParallelPlanRunsOnTheCpuLikeOneRank) {
  const std::string model = testing::fixture("tiny-gqa");
  const std::string cache = " --cache-dir " + testing::fixtures_dir() + "/kernel-cache";
  const std::string args = " --prompt 'hello world' -n 12 --device cpu";
  std::string want;
  for (int tp : {1, 2, 4}) {
    const std::string plan = testing::unique_temp_path("tp" + std::to_string(tp) + ".kplan");
    Result c = kiln("compile " + model + " -o " + plan + " --tp " + std::to_string(tp) + cache);
    ASSERT_EQ(c.exit_code, 0) << c.output;
    Result r = kiln("run " + plan + args, /*stdout_only=*/true);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_GT(r.output.size(), 1u);
    if (tp == 1) {
      want = r.output;
    } else {
      EXPECT_EQ(r.output, want) << "--tp " << tp;
      Result i = kiln("inspect " + plan);
      ASSERT_EQ(i.exit_code, 0) << i.output;
      EXPECT_THAT(i.output, HasSubstr("tensor parallel: " + std::to_string(tp) + " ranks"));
      EXPECT_THAT(i.output, HasSubstr("per rank: weights "));
    }
    std::filesystem::remove(plan);
  }
  Result ir = kiln("ir " + model + " --tp 2");
  ASSERT_EQ(ir.exit_code, 0) << ir.output;
  EXPECT_THAT(ir.output, HasSubstr("  ranks 2\n"));
  EXPECT_THAT(ir.output, HasSubstr("param @layers.0.o_proj.shard : bf16[64,32] = shards(\n"
                                   "      cols(\"layers.0.o_proj\"[0:32]),\n"
                                   "      cols(\"layers.0.o_proj\"[32:64]))"));
  EXPECT_THAT(ir.output, HasSubstr(" = all_reduce("));
  EXPECT_THAT(ir.output, HasSubstr(" = all_gather("));
  Result bad = kiln("ir " + model + " --tp 3");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_THAT(bad.output, HasSubstr("3 does not divide the 4 query heads"));
  bad = kiln("compile " + model + " -o " + testing::unique_temp_path("x.kplan") + " --tp 0");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_THAT(bad.output, HasSubstr("--tp"));
}

TEST(KilnCli, RunAPlanWhoseWeightsAreGone) {
  const std::string dir = testing::unique_temp_path("tiny");
  std::filesystem::copy(testing::fixture("tiny"), dir, std::filesystem::copy_options::recursive);
  const std::string plan = testing::unique_temp_path("tiny.kplan");
  Result c = kiln("compile " + dir + " -o " + plan + " --cache-dir " +
                  testing::unique_temp_path("kernels"));
  ASSERT_EQ(c.exit_code, 0) << c.output;
  std::filesystem::remove(dir + "/model.safetensors");
  Result r = kiln("run " + plan + " --prompt hi -n 2 --device cpu");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr(dir + "/model.safetensors"));
  EXPECT_THAT(r.output, HasSubstr("kiln compile " + dir));
  std::filesystem::remove_all(dir);
  std::filesystem::remove(plan);
}

TEST(KilnCli, RunBadInput) {
  const std::string model = testing::fixture("tiny");
  Result r = kiln("run /nonexistent/model.gguf --prompt hi");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("/nonexistent/model.gguf: no such file or directory"));

  r = kiln("run " + model + " --prompt ''");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("empty prompt"));

  std::string long_prompt(400, 'x');
  for (size_t i = 0; i < long_prompt.size(); i += 2) long_prompt[i] = ' ';
  r = kiln("run " + model + " --max-context 64 --prompt '" + long_prompt + "'");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("tokens; the context holds 64"));

  r = kiln("run " + model + " --max-context 16 --prompt 'a b c' -n 100");
  EXPECT_EQ(r.exit_code, 0) << r.output;  // a clean stop, with a message
  EXPECT_THAT(r.output, HasSubstr("stopped: reached the context length"));

  r = kiln("run " + model + " --kv-pages 1 --prompt 'a b c' -n 40");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("out of pages"));

  r = kiln("run " + model + " --prompt hi --temperature -1");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("temperature"));

  if (!open_gpu().ok()) {  // with a GPU, --device cuda compiles the kernels and runs
    r = kiln("run " + model + " --prompt hi --device cuda");
    EXPECT_NE(r.exit_code, 0);
    EXPECT_THAT(r.output, HasSubstr("no GPU found"));
  }
}

}  // namespace
}  // namespace kiln
