// ReferenceBackend: a .kplan read back runs exactly like the model compiled in memory (same greedy
// tokens, SmolLM2 and the random-weight fixtures); missing or changed weight files are errors that
// name the file and the recompile command; KV page copies and step validation.
#include "runtime/reference/reference_backend.h"

#include <filesystem>
#include <vector>

#include <fstream>
#include "absl/strings/str_cat.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "codegen/compile_model.h"
#include "codegen/nvrtc_compiler.h"
#include "models/tokenizer_source.h"
#include "plan/plan_file.h"
#include "runtime/engine/engine.h"
#include "tests/fixtures.h"
#include "tests/runtime/model_plan.h"

namespace kiln {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

GenerationRequest greedy(std::vector<int32_t> prompt, int64_t n) {
  GenerationRequest r;
  r.prompt = std::move(prompt);
  r.max_new_tokens = n;
  r.stop_ids = {-1};  // run the full length: random weights may pick a special token
  return r;
}

// The greedy tokens of each request on `backend`.
std::vector<std::vector<int32_t>> generate(Backend& backend, const Tokenizer& tok,
                                           const std::vector<GenerationRequest>& reqs) {
  Engine engine(backend, tok);
  auto out = engine.generate(reqs);
  EXPECT_TRUE(out.ok()) << out.status();
  std::vector<std::vector<int32_t>> tokens;
  if (out.ok()) {
    for (const GenerationResult& r : *out) tokens.push_back(r.tokens);
  }
  return tokens;
}

// `kiln compile <model> -o x.kplan` (default limits), `kiln run x.kplan` and `kiln run <model>`
// (max_seqs 1, compiled in memory) must give the same greedy tokens.
void expect_plan_file_runs_like_the_model(const std::string& model, int64_t new_tokens,
                                          bool pack_weights = false) {
  CompileOptions co;
  co.model = model;
  co.pack_weights = pack_weights;
  co.output = testing::unique_temp_path("model.kplan");
  co.build_kernels = nvrtc_available();  // the kernels are carried, not run, on the CPU
  co.cache_dir = testing::unique_temp_path("kernels");
  auto compiled = compile_model(co);
  ASSERT_TRUE(compiled.ok()) << compiled.status();
  auto loaded = read_plan(co.output);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  BackendOptions bo;
  bo.num_threads = 2;
  auto from_file = ReferenceBackend::create(*loaded, bo);
  ASSERT_TRUE(from_file.ok()) << from_file.status();

  StepLimits run_limits;
  run_limits.max_seqs = 1;
  auto in_memory = testing::load_model(model, run_limits, bo);
  ASSERT_TRUE(in_memory.ok()) << in_memory.status();
  EXPECT_EQ(loaded->plan.ir.empty(), false);
  const Tokenizer& tok = *in_memory->tokenizer;

  for (const char* prompt : {"The capital of France is", "1, 2, 3,"}) {
    std::vector<GenerationRequest> reqs = {
        greedy(tok.encode(prompt, /*parse_special=*/true, tok.add_bos()), new_tokens)};
    auto want = generate(*in_memory->backend, tok, reqs);
    auto got = generate(**from_file, tok, reqs);
    ASSERT_EQ(want.size(), 1u);
    EXPECT_EQ(static_cast<int64_t>(want[0].size()), new_tokens);
    EXPECT_EQ(got, want) << prompt;
  }
  fs::remove(co.output);
}

class PlanFileRuns : public ::testing::TestWithParam<std::string> {};

TEST_P(PlanFileRuns, LikeTheModelCompiledInMemory) {
  expect_plan_file_runs_like_the_model(testing::fixture(GetParam()), 12);
}

TEST(PlanFileRunsPacked, LikeTheModelCompiledInMemory) {
  // The weights travel inside the plan (blobs) instead of referencing the checkpoint.
  expect_plan_file_runs_like_the_model(testing::fixture("tiny-gqa"), 12, /*pack_weights=*/true);
}

INSTANTIATE_TEST_SUITE_P(Presets, PlanFileRuns,
                         ::testing::Values("tiny", "tiny-gqa", "tiny-qwen2", "tiny-llama3"));

TEST(PlanFileRunsSmolLM2, LikeTheModelCompiledInMemory) {
  const std::string path = testing::smollm2_gguf();
  if (path.empty()) KILN_SKIP_OUTSIDE_CI("SmolLM2 GGUF not in the cache (scripts/fetch-model.sh)");
  expect_plan_file_runs_like_the_model(path, 16);
}

// A tensor-parallel plan (kiln compile --tp N) runs all its ranks on the CPU, each on its own
// weight slices and KV heads, and gives the greedy tokens of the plan compiled for one GPU: from a
// plan file, for an HF checkpoint (MHA, GQA with tied embeddings; 4 ranks over 2 KV heads
// replicate them) and a Q8_0 GGUF (column slices assembled from whole blocks, converted at load
// or kept as blocks with --weights-dtype native).
struct TpCase {
  std::string model;
  int ranks;
  bool native = false;
};

class TensorParallelPlanRuns : public ::testing::TestWithParam<TpCase> {};

TEST_P(TensorParallelPlanRuns, LikeTheOneRankPlan) {
  const TpCase& c = GetParam();
  auto plan_file = [&](int ranks) -> absl::StatusOr<LoadedPlan> {
    CompileOptions co;
    co.model = testing::fixture(c.model);
    co.tensor_parallel = ranks;
    co.limits.max_seqs = 2;
    co.build_kernels = false;  // the CPU runs the IR; compiling kernels is another test's
    co.output = testing::unique_temp_path(absl::StrCat("tp", ranks, ".kplan"));
    absl::StatusOr<CompileReport> r = compile_model(co);
    if (!r.ok()) return r.status();
    return read_plan(co.output);
  };
  auto one = plan_file(1);
  ASSERT_TRUE(one.ok()) << one.status();
  auto many = plan_file(c.ranks);
  ASSERT_TRUE(many.ok()) << many.status();
  EXPECT_EQ(many->plan.ranks, c.ranks);
  // Two all_reduces per layer and the logits' all_gather, lowered for the GPU.
  EXPECT_EQ(many->plan.collectives.size(), 2 * many->plan.model.num_layers + 1);
  BackendOptions bo;
  bo.num_threads = 2;
  bo.native_weights = c.native;
  auto a = ReferenceBackend::create(*one, bo);
  ASSERT_TRUE(a.ok()) << a.status();
  auto b = ReferenceBackend::create(*many, bo);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ((*b)->ranks(), c.ranks);
  EXPECT_THAT((*b)->load_report(), HasSubstr(absl::StrCat(c.ranks, " tensor-parallel ranks")));
  auto tok = load_tokenizer(one->plan.tokenizer_path);
  ASSERT_TRUE(tok.ok()) << tok.status();
  std::vector<GenerationRequest> reqs = {
      greedy(tok->encode("The capital of France is", true, tok->add_bos()), 10),
      greedy(tok->encode("1, 2, 3,", true, tok->add_bos()), 10)};
  auto want = generate(**a, *tok, reqs);
  auto got = generate(**b, *tok, reqs);
  ASSERT_EQ(want.size(), 2u);
  EXPECT_EQ(want[0].size(), 10u);
  EXPECT_EQ(got, want);
}

INSTANTIATE_TEST_SUITE_P(Models, TensorParallelPlanRuns,
                         ::testing::Values(TpCase{"tiny", 2}, TpCase{"tiny-gqa", 2},
                                           TpCase{"tiny-gqa", 4}, TpCase{"tiny-qwen2", 4},
                                           TpCase{"tiny/model.q8_0.gguf", 2},
                                           TpCase{"tiny/model.q8_0.gguf", 2, true}),
                         [](const auto& info) {
                           std::string n = absl::StrCat(info.param.model, "_tp", info.param.ranks,
                                                        info.param.native ? "_native" : "");
                           for (char& ch : n)
                             ch = std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
                           return n;
                         });

// A plan whose IR and rank count disagree, or that lacks a rank's shard, says so.
TEST(ReferenceBackend, TensorParallelPlanMismatchesAreNamed) {
  CompileOptions co;
  co.model = testing::fixture("tiny");
  co.tensor_parallel = 2;
  co.build_kernels = false;
  auto built = build_plan(co);
  ASSERT_TRUE(built.ok()) << built.status();
  Plan wrong = built->plan;
  wrong.ranks = 1;
  EXPECT_THAT(ReferenceBackend::create(wrong).status().message(),
              HasSubstr("declares 1 tensor-parallel ranks but its IR runs on 2"));
  Plan missing = built->plan;
  std::erase_if(missing.weights, [](const PlanWeight& w) { return w.rank == 1; });
  EXPECT_THAT(ReferenceBackend::create(missing).status().message(),
              HasSubstr("lists no such weight for rank 1"));
}

// A copy of the "tiny" fixture (HF directory) that a test may damage, and its plan.
struct DamageableModel {
  std::string dir;
  Plan plan;
  std::string weights() const { return dir + "/model.safetensors"; }
};

DamageableModel copy_tiny() {
  DamageableModel m;
  m.dir = testing::unique_temp_path("tiny");
  fs::remove_all(m.dir);
  fs::copy(testing::fixture("tiny"), m.dir, fs::copy_options::recursive);
  auto plan = testing::plan_for_model(m.dir, StepLimits{});
  EXPECT_TRUE(plan.ok()) << plan.status();
  if (plan.ok()) m.plan = std::move(*plan);
  return m;
}

TEST(ReferenceBackend, MissingWeightFileNamesItAndTheRecompileCommand) {
  DamageableModel m = copy_tiny();
  ASSERT_TRUE(fs::exists(m.weights()));
  fs::remove(m.weights());
  auto b = ReferenceBackend::create(m.plan);
  ASSERT_EQ(b.status().code(), absl::StatusCode::kFailedPrecondition) << b.status();
  EXPECT_THAT(b.status().message(), HasSubstr(fs::absolute(m.weights()).string()));
  EXPECT_THAT(b.status().message(), HasSubstr("kiln compile " + fs::absolute(m.dir).string()));
  fs::remove_all(m.dir);
}

TEST(ReferenceBackend, ChangedWeightFileIsCaught) {
  DamageableModel m = copy_tiny();
  // The last weight stored in the checkpoint (derived ones, listed after, have no file).
  const PlanWeight* last = nullptr;
  for (const PlanWeight& pw : m.plan.weights) {
    if (!pw.derived()) last = &pw;
  }
  ASSERT_NE(last, nullptr);
  const PlanWeight& w = *last;
  // Same size, one byte flipped inside a weight: only the checksum sees it.
  {
    std::fstream f(w.file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(static_cast<std::streamoff>(w.offset + w.size / 2));
    char c = 0;
    f.read(&c, 1);
    c = static_cast<char>(c ^ 0x5a);
    f.seekp(static_cast<std::streamoff>(w.offset + w.size / 2));
    f.write(&c, 1);
  }
  EXPECT_TRUE(ReferenceBackend::create(m.plan).ok()) << "sizes still match";
  BackendOptions verify;
  verify.verify_weights = true;
  auto b = ReferenceBackend::create(m.plan, verify);
  ASSERT_EQ(b.status().code(), absl::StatusCode::kFailedPrecondition) << b.status();
  EXPECT_THAT(b.status().message(), HasSubstr("checksum"));
  EXPECT_THAT(b.status().message(), HasSubstr(w.file));
  EXPECT_THAT(b.status().message(), HasSubstr("kiln compile"));
  // Truncated: the size check alone catches it.
  fs::resize_file(w.file, w.offset + w.size / 2);
  b = ReferenceBackend::create(m.plan);
  ASSERT_EQ(b.status().code(), absl::StatusCode::kFailedPrecondition) << b.status();
  EXPECT_THAT(b.status().message(), HasSubstr("has changed since the plan was compiled"));
  fs::remove_all(m.dir);
}

TEST(ReferenceBackend, APlanWithoutAWeightTheIrReadsIsAnError) {
  auto plan = testing::plan_for_model(testing::fixture("tiny"), StepLimits{});
  ASSERT_TRUE(plan.ok()) << plan.status();
  const std::string dropped = plan->weights.front().name;
  plan->weights.erase(plan->weights.begin());
  auto b = ReferenceBackend::create(*plan);
  ASSERT_FALSE(b.ok());
  EXPECT_THAT(b.status().message(), HasSubstr("@" + dropped));
}

TEST(ReferenceBackend, CopiesKvPagesOfEveryLayerAndChecksSteps) {
  auto plan = testing::plan_for_model(testing::fixture("tiny"), StepLimits{});
  ASSERT_TRUE(plan.ok()) << plan.status();
  BackendOptions o;
  o.kv_pages = 4;
  auto b = ReferenceBackend::create(*plan, o);
  ASSERT_TRUE(b.ok()) << b.status();
  ReferenceBackend& be = **b;
  EXPECT_EQ(be.kv_pages(), 4);
  EXPECT_EQ(be.name(), "cpu");
  EXPECT_THAT(be.load_report(), HasSubstr("4 pages"));
  const int64_t n = be.floats_per_page();
  const int32_t layers = plan->kv.num_layers;
  ASSERT_GT(layers, 1);
  for (int32_t l = 0; l < layers; ++l) {
    for (int64_t j = 0; j < n; ++j) {
      be.k_data(l)[1 * n + j] = 100.0f * l + static_cast<float>(j);
      be.v_data(l)[1 * n + j] = -100.0f * l - static_cast<float>(j);
    }
  }
  ASSERT_TRUE(be.copy_kv_pages({{1, 3}}).ok());
  for (int32_t l = 0; l < layers; ++l) {
    for (int64_t j = 0; j < n; ++j) {
      ASSERT_EQ(be.k_data(l)[3 * n + j], 100.0f * l + static_cast<float>(j));
      ASSERT_EQ(be.v_data(l)[3 * n + j], -100.0f * l - static_cast<float>(j));
    }
  }
  EXPECT_EQ(be.copy_kv_pages({{1, 4}}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(be.k_data(layers), nullptr);

  // A step whose sampling list does not match its sequences.
  KvPageTables tables = *KvPageTables::create({plan->kv.page_size, 4});
  SeqId s = tables.add_sequence();
  auto meta = build_step_metadata(tables, {{s, 2}});
  ASSERT_TRUE(meta.ok());
  StepRequest req{StepInputs{{5, 6}, *meta}, {}, false};
  EXPECT_THAT(be.run_step(req).status().message(), HasSubstr("1 sequences but 0 sampling"));
  req.sampling.push_back({});
  req.return_logits = true;
  auto out = be.run_step(req);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->tokens.size(), 1u);
  ASSERT_EQ(static_cast<int64_t>(out->logits.size()), plan->model.vocab_size);
  EXPECT_EQ(out->tokens[0],
            std::max_element(out->logits.begin(), out->logits.end()) - out->logits.begin());
}

}  // namespace
}  // namespace kiln
