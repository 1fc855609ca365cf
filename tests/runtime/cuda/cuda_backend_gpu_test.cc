// CudaBackend against the ReferenceBackend on the same plan: random-weight models written by
// scripts/make_fixture.py (MHA and GQA, head_dim 64 and 128, tied embeddings, Qwen2 qkv bias,
// llama3 rope scaling past the original context), compiled by `kiln compile`'s library call for
// the GPU's arch, run for one prefill and 16 decode steps on both backends with the same inputs.
// Bounds (issue 10): bf16 relative error of each step's logits ||gpu - ref|| / ||ref|| <= 2e-2,
// argmax equal at >= 99% of positions; a batched ragged step agrees with each sequence run alone;
// CUDA-graph replay gives exactly the eager tokens; a Q4_1 GGUF runs and matches its CPU run.
// Skips, saying why, without a GPU or without the fixture generator's Python packages.
#include "runtime/cuda/cuda_backend.h"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "codegen/compile_model.h"
#include "ir/op_kind.h"
#include "ir/parser.h"
#include "plan/plan_file.h"
#include "runtime/check/checked_backend.h"
#include "runtime/kv/page_tables.h"
#include "runtime/kv/prefix_cache.h"
#include "runtime/kv/step_metadata.h"
#include "runtime/reference/reference_backend.h"

namespace kiln {
namespace {

namespace fs = std::filesystem;

constexpr double kMaxRelError = 2e-2;
constexpr double kMinArgmaxAgreement = 0.99;
constexpr int kDecodes = 16;

/// The GPU's arch, or why there is none.
absl::StatusOr<std::string> gpu_arch() {
  static absl::StatusOr<std::string>* arch = [] {
    absl::StatusOr<GpuDevice> d = open_gpu();
    if (!d.ok()) return new absl::StatusOr<std::string>(d.status());
    std::printf("[ kiln gpu ] %s\n", d->describe().c_str());
    return new absl::StatusOr<std::string>(d->arch());
  }();
  return *arch;
}

#define REQUIRE_GPU()                                                                 \
  do {                                                                                \
    if (!gpu_arch().ok()) GTEST_SKIP() << "GPU unavailable: " << gpu_arch().status(); \
  } while (0)

struct Fixture {
  std::string name;
  std::string preset;       // a make_fixture.py preset, or
  std::string config_json;  // a config.json of its own
  int prompt_len = 37;
};

// gtest prints a parameter by its name, not its bytes.
void PrintTo(const Fixture& f, std::ostream* os) { *os << f.name; }

const std::vector<Fixture>& fixtures() {
  static const std::vector<Fixture> f = {
      {"mha-hd64", "",
       R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 256,
           "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4,
           "num_key_value_heads": 4, "max_position_embeddings": 1024, "rms_norm_eps": 1e-5,
           "rope_theta": 10000.0, "tie_word_embeddings": false})",
       37},
      {"gqa-hd128-tied", "",
       R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 256,
           "intermediate_size": 384, "num_hidden_layers": 2, "num_attention_heads": 4,
           "num_key_value_heads": 2, "head_dim": 128, "max_position_embeddings": 1024,
           "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": true})",
       53},
      {"qwen2-bias", "tiny-qwen2", "", 29},
      // original_max_position_embeddings is 128: the prompt and decodes run past it.
      {"llama3-rope-scaling", "tiny-llama3", "", 150},
  };
  return f;
}

std::string fixture_root() { return std::string(KILN_BUILD_DIR) + "/gpu-fixtures"; }

/// Writes the fixture (once per build folder) and returns its folder, or why it could not.
absl::StatusOr<std::string> make_fixture(const Fixture& f, const std::string& extra = "") {
  const std::string dir = absl::StrCat(fixture_root(), "/", f.name);
  const std::string stamp = dir + "/.complete" + (extra.empty() ? "" : "-gguf");
  fs::create_directories(dir);
  // ctest runs each case in its own process, several at once: one writer per fixture.
  const int lock = open((dir + ".lock").c_str(), O_CREAT | O_RDWR, 0644);
  if (lock >= 0) flock(lock, LOCK_EX);
  struct Unlock {
    int fd;
    ~Unlock() {
      if (fd >= 0) close(fd);
    }
  } unlock{lock};
  if (fs::exists(stamp)) return dir;
  std::string source = "--preset " + f.preset;
  if (f.preset.empty()) {
    std::ofstream(dir + "/fixture-config.json") << f.config_json;
    source = "--config " + dir + "/fixture-config.json";
  }
  const std::string cmd = absl::StrCat(
      "python3 ", KILN_SOURCE_DIR, "/scripts/make_fixture.py ", source, " --out ", dir,
      " --dtype f32 ", extra.empty() ? "--no-gguf" : extra, " > ", dir, "/make_fixture.log 2>&1");
  if (std::system(cmd.c_str()) != 0) {
    std::ifstream log(dir + "/make_fixture.log");
    std::string tail((std::istreambuf_iterator<char>(log)), {});
    if (tail.size() > 400) tail = tail.substr(tail.size() - 400);
    return absl::UnavailableError(absl::StrCat("make_fixture.py failed: ", tail));
  }
  std::ofstream(stamp) << "ok\n";
  return dir;
}

/// Compiles `model` (an HF folder or a .gguf) for the GPU's arch into `plan_path` and loads it.
absl::StatusOr<LoadedPlan> compile_plan(const std::string& model, const std::string& plan_path,
                                        GemvChoice gemv = GemvChoice::kHeuristic,
                                        const std::string& from_ir = "",
                                        std::optional<PersistentOptions> persistent = {},
                                        std::optional<DType> kv_dtype = {}) {
  CompileOptions o;
  o.limits.kv_dtype = kv_dtype;
  o.persistent = persistent;
  o.from_ir = from_ir;
  o.gemv.default_choice = gemv;
  o.model = model;
  o.output = plan_path;
  o.arch = *gpu_arch();
  o.limits.max_tokens = 512;
  o.limits.max_seqs = 8;
  o.limits.max_context = 512;
  o.limits.max_pool_pages = 1024;
  o.limits.dtype = DType::kBF16;
  o.cache_dir = std::string(KILN_BUILD_DIR) + "/gpu-kernel-cache";
  absl::StatusOr<CompileReport> r = compile_model(o);
  if (!r.ok()) return r.status();
  return read_plan(plan_path);
}

/// A plan file per test process (cases of one fixture run concurrently).
std::string plan_path(const std::string& dir) {
  return absl::StrCat(dir, "/model.", getpid(), ".kplan");
}

PlanBlobReader blob_reader(const LoadedPlan& p) {
  return [&p](int index) -> absl::StatusOr<std::string_view> { return p.blob(index); };
}

/// Every step's logits ([S * vocab]) and sampled tokens.
struct Trace {
  std::vector<std::vector<float>> logits;
  std::vector<std::vector<int32_t>> tokens;
};

/// One prefill step of every prompt together, then `decodes` decode steps of all sequences. The
/// token fed at decode step d is `forced->tokens[d]` when given (so two backends see identical
/// inputs), else the backend's own greedy token.
absl::StatusOr<Trace> drive(Backend& backend, const std::vector<std::vector<int32_t>>& prompts,
                            int decodes, const Trace* forced = nullptr) {
  absl::StatusOr<KvPageTables> tables =
      KvPageTables::create({backend.plan().kv.page_size, static_cast<int32_t>(backend.kv_pages())});
  if (!tables.ok()) return tables.status();
  std::vector<SeqId> seqs;
  for (size_t i = 0; i < prompts.size(); ++i) seqs.push_back(tables->add_sequence());
  Trace trace;
  std::vector<int32_t> next;
  for (int step = 0; step <= decodes; ++step) {
    std::vector<StepSequence> batch;
    StepRequest req;
    for (size_t i = 0; i < prompts.size(); ++i) {
      if (step == 0) {
        batch.push_back({seqs[i], static_cast<int32_t>(prompts[i].size())});
        req.inputs.tokens.insert(req.inputs.tokens.end(), prompts[i].begin(), prompts[i].end());
      } else {
        batch.push_back({seqs[i], 1});
        req.inputs.tokens.push_back(forced ? forced->tokens[step - 1][i] : next[i]);
      }
    }
    absl::StatusOr<StepMetadata> meta = build_step_metadata(*tables, batch);
    if (!meta.ok()) return meta.status();
    if (absl::Status s = backend.copy_kv_pages(tables->take_pending_copies()); !s.ok()) return s;
    req.inputs.metadata = std::move(*meta);
    req.sampling.assign(prompts.size(), SequenceSampling{});  // greedy
    req.return_logits = true;
    absl::StatusOr<StepResult> r = backend.run_step(req);
    if (!r.ok())
      return absl::Status(r.status().code(),
                          absl::StrCat("step ", step, ": ", r.status().message()));
    next = r->tokens;
    trace.tokens.push_back(r->tokens);
    trace.logits.push_back(std::move(r->logits));
  }
  return trace;
}

std::vector<int32_t> random_prompt(int len, int64_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> d(3, static_cast<int32_t>(vocab) - 1);
  std::vector<int32_t> p(len);
  for (int32_t& t : p) t = d(rng);
  return p;
}

/// Six prompts of mixed lengths (one of a single token, so the prefill step is mixed): 6 x 17
/// logits rows, enough positions for the 99% argmax bound to allow one near-tie.
std::vector<std::vector<int32_t>> mixed_prompts(int len, int64_t vocab, uint32_t seed) {
  std::vector<std::vector<int32_t>> p;
  for (int n : {len, 3, 17, len / 2 + 1, 33, 1}) p.push_back(random_prompt(n, vocab, seed++));
  return p;
}

struct Agreement {
  double max_rel = 0;
  int argmax_equal = 0, positions = 0;
  /// Positions where the GPU picked another token whose reference logit is within 1% of the
  /// row's logit range below the reference maximum: a near-tie that bf16 rounding may flip.
  int near_ties = 0;
};

/// Per sequence row of every step: relative L2 error and argmax agreement.
Agreement compare(const Trace& gpu, const Trace& ref, int64_t vocab) {
  Agreement a;
  for (size_t step = 0; step < ref.logits.size(); ++step) {
    const std::vector<float>& g = gpu.logits[step];
    const std::vector<float>& r = ref.logits[step];
    for (size_t row = 0; row * vocab < r.size(); ++row) {
      double num = 0, den = 0;
      int64_t ga = 0, ra = 0;
      for (int64_t v = 0; v < vocab; ++v) {
        const double gv = g[row * vocab + v], rv = r[row * vocab + v];
        num += (gv - rv) * (gv - rv);
        den += rv * rv;
        if (gv > g[row * vocab + ga]) ga = v;
        if (rv > r[row * vocab + ra]) ra = v;
      }
      const double rel = std::isfinite(num) ? std::sqrt(num / std::max(den, 1e-30)) : 1e30;
      a.max_rel = std::max(a.max_rel, rel);
      a.argmax_equal += ga == ra;
      if (ga != ra) {
        double lo = r[row * vocab], hi = lo;
        for (int64_t v = 0; v < vocab; ++v) {
          lo = std::min<double>(lo, r[row * vocab + v]);
          hi = std::max<double>(hi, r[row * vocab + v]);
        }
        a.near_ties += r[row * vocab + ga] >= r[row * vocab + ra] - 1e-2 * (hi - lo);
      }
      ++a.positions;
    }
  }
  return a;
}

/// The GPU's logits for scripts/compare_hf_logits.py: kiln-trace.json (prompt, the tokens fed at
/// each decode step, vocab) and kiln-logits.f32 (one row per step, f32 little-endian).
void write_trace(const std::string& dir, const std::vector<int32_t>& prompt, const Trace& fed,
                 const Trace& gpu, int64_t vocab) {
  std::ofstream meta(dir + "/kiln-trace.json");
  meta << "{\"prompt\": [";
  for (size_t i = 0; i < prompt.size(); ++i) meta << (i ? ", " : "") << prompt[i];
  meta << "], \"fed\": [";
  for (size_t i = 0; i + 1 < fed.tokens.size(); ++i) meta << (i ? ", " : "") << fed.tokens[i][0];
  meta << "], \"steps\": " << gpu.logits.size() << "}\n";
  std::ofstream bin(dir + "/kiln-logits.f32", std::ios::binary);
  for (const std::vector<float>& rows : gpu.logits) {  // sequence 0's row of each step
    bin.write(reinterpret_cast<const char*>(rows.data()),
              static_cast<std::streamsize>(vocab * sizeof(float)));
  }
}

class CudaBackendGpu : public ::testing::TestWithParam<Fixture> {};

TEST_P(CudaBackendGpu, LogitsMatchReferenceOverPrefillAndDecodes) {
  REQUIRE_GPU();
  const Fixture& f = GetParam();
  absl::StatusOr<std::string> dir = make_fixture(f);
  if (!dir.ok()) GTEST_SKIP() << f.name << ": " << dir.status().message();
  absl::StatusOr<LoadedPlan> plan = compile_plan(*dir, plan_path(*dir));
  ASSERT_TRUE(plan.ok()) << plan.status();
  BackendOptions opts;
  opts.kv_pages = 256;
  absl::StatusOr<std::unique_ptr<ReferenceBackend>> cpu =
      ReferenceBackend::create(plan->plan, opts, blob_reader(*plan));
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  absl::StatusOr<std::unique_ptr<CudaBackend>> gpu =
      CudaBackend::create(plan->plan, opts, blob_reader(*plan));
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  std::printf("[ kiln gpu ] %s: %s\n", f.name.c_str(), (*gpu)->load_report().c_str());
  const int64_t vocab = plan->plan.model.vocab_size;
  const std::vector<std::vector<int32_t>> prompts = mixed_prompts(f.prompt_len, vocab, 7);
  absl::StatusOr<Trace> ref = drive(**cpu, prompts, kDecodes);
  ASSERT_TRUE(ref.ok()) << ref.status();
  absl::StatusOr<Trace> out = drive(**gpu, prompts, kDecodes, &*ref);
  ASSERT_TRUE(out.ok()) << out.status();
  const Agreement a = compare(*out, *ref, vocab);
  std::printf("[ kiln gpu ] %s: max rel error %.3g, argmax equal %d/%d (+%d near-ties)\n",
              f.name.c_str(), a.max_rel, a.argmax_equal, a.positions, a.near_ties);
  write_trace(*dir, prompts[0], *ref, *out, vocab);
  EXPECT_LE(a.max_rel, kMaxRelError) << f.name;
  // The default plan runs its small GEMMs on kiln's GEMV (codegen/families/gemv.h), which sums in
  // another order than the reference: as in GemvPathMatchesReference, a flip between two logits
  // within 1% of the row's range counts as agreement (2/102 flipped on mha-hd64 at rel error
  // 0.0074 on H200); a wrong kernel moves the error, which kMaxRelError bounds.
  EXPECT_GE(a.argmax_equal + a.near_ties, kMinArgmaxAgreement * a.positions) << f.name;
}

/// Sequence 0 prefills `prompt`; `members - 1` forks of it then share all its pages (as the prefix
/// cache shares a prompt's), and every sequence decodes `decodes` steps together, each step's
/// layout found under `mode` (StepInputs::cascade). Decode step d feeds sequence i
/// forced->tokens[d][i] when given, else its own greedy token (the first decode a different token
/// per sequence, so their suffixes differ). Trace rows: the prefill's, then one per decode step.
absl::StatusOr<Trace> drive_shared(Backend& backend, const std::vector<int32_t>& prompt,
                                   int members, int decodes, CascadeMode mode, const Trace* forced,
                                   int* cascade_steps) {
  const int32_t ps = backend.plan().kv.page_size;
  const int32_t vocab = static_cast<int32_t>(backend.plan().model.vocab_size);
  absl::StatusOr<KvPageTables> tables =
      KvPageTables::create({ps, static_cast<int32_t>(backend.kv_pages())});
  if (!tables.ok()) return tables.status();
  std::vector<SeqId> seqs = {tables->add_sequence()};
  Trace trace;  // tokens: the tokens fed at each decode step
  std::vector<int32_t> next;
  *cascade_steps = 0;
  for (int step = 0; step <= decodes; ++step) {
    std::vector<StepSequence> batch;
    StepRequest req;
    if (step == 0) {
      batch.push_back({seqs[0], static_cast<int32_t>(prompt.size())});
      req.inputs.tokens = prompt;
    } else {
      if (step == 1) {
        for (int i = 1; i < members; ++i) {
          absl::StatusOr<SeqId> child = tables->fork(seqs[0]);
          if (!child.ok()) return child.status();
          seqs.push_back(*child);
          next.push_back((next[0] + 7 * i) % vocab);
        }
      }
      for (size_t i = 0; i < seqs.size(); ++i) {
        batch.push_back({seqs[i], 1});
        req.inputs.tokens.push_back(forced ? forced->tokens[step - 1][i] : next[i]);
      }
      trace.tokens.push_back(req.inputs.tokens);
    }
    absl::StatusOr<StepMetadata> meta = build_step_metadata(*tables, batch);
    if (!meta.ok()) return meta.status();
    if (absl::Status s = backend.copy_kv_pages(tables->take_pending_copies()); !s.ok()) return s;
    req.inputs.cascade = step_cascade(*meta, ps, mode);
    *cascade_steps += req.inputs.cascade.has_value();
    req.inputs.metadata = std::move(*meta);
    req.sampling.assign(batch.size(), SequenceSampling{});  // greedy
    req.return_logits = true;
    absl::StatusOr<StepResult> r = backend.run_step(req);
    if (!r.ok()) {
      return absl::Status(r.status().code(),
                          absl::StrCat("step ", step, ": ", r.status().message()));
    }
    next = r->tokens;
    trace.logits.push_back(std::move(r->logits));
  }
  return trace;
}

// Cascade attention (issue 14 item 1) in the runtime: five sequences on one 300-token prompt
// (forks sharing its pages; the partly filled last page is copied on write, so the shared prefix
// is its 18 whole pages, 288 tokens) decode 16 steps
// with CUDA graphs on. With --cascade auto their decode steps run cascade_prefix + cascade_suffix
// in place of the plain decode, with off the plain decode, on the same fed tokens: logits within
// the bf16 bound of each other and of the reference backend's cascade, and the same greedy tokens
// (near-ties aside, as elsewhere here). The graphs are replayed (the cascade flag and the layout's
// shape are in the launch signature).
TEST_P(CudaBackendGpu, CascadeGivesThePlainPathsTokens) {
  REQUIRE_GPU();
  const Fixture& f = GetParam();
  absl::StatusOr<std::string> dir = make_fixture(f);
  if (!dir.ok()) GTEST_SKIP() << f.name << ": " << dir.status().message();
  absl::StatusOr<LoadedPlan> plan = compile_plan(*dir, plan_path(*dir));
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(static_cast<int64_t>(plan->plan.cascades.size()), plan->plan.model.num_layers);
  constexpr int kPrompt = 300, kMembers = 5;  // a shared prefix past find_shared_prefix's 256
  const int64_t limit = plan->plan.limits.max_context;  // 0: the model's
  const int64_t context =
      limit > 0 ? std::min(plan->plan.model.max_context, limit) : plan->plan.model.max_context;
  if (context < kPrompt + kDecodes + 1) {
    GTEST_SKIP() << f.name << ": a context of " << context << " tokens holds no " << kPrompt
                 << "-token shared prompt and its decodes";
  }
  BackendOptions opts;
  opts.kv_pages = 256;
  absl::StatusOr<std::unique_ptr<ReferenceBackend>> cpu =
      ReferenceBackend::create(plan->plan, opts, blob_reader(*plan));
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  absl::StatusOr<std::unique_ptr<CudaBackend>> on =
      CudaBackend::create(plan->plan, opts, blob_reader(*plan));
  ASSERT_TRUE(on.ok()) << on.status();
  absl::StatusOr<std::unique_ptr<CudaBackend>> off =
      CudaBackend::create(plan->plan, opts, blob_reader(*plan));
  ASSERT_TRUE(off.ok()) << off.status();
  const int64_t vocab = plan->plan.model.vocab_size;
  const std::vector<int32_t> prompt = random_prompt(kPrompt, vocab, 11);
  int ref_steps = 0, on_steps = 0, off_steps = 0;
  absl::StatusOr<Trace> ref =
      drive_shared(**cpu, prompt, kMembers, kDecodes, CascadeMode::kAuto, nullptr, &ref_steps);
  ASSERT_TRUE(ref.ok()) << ref.status();
  EXPECT_EQ(ref_steps, kDecodes);  // every decode step has the shared prefix
  absl::StatusOr<Trace> cascade =
      drive_shared(**on, prompt, kMembers, kDecodes, CascadeMode::kAuto, &*ref, &on_steps);
  ASSERT_TRUE(cascade.ok()) << cascade.status();
  EXPECT_EQ(on_steps, kDecodes);
  EXPECT_TRUE((*on)->last_step().cascade);
  EXPECT_TRUE((*on)->last_step().graph_replay);
  absl::StatusOr<Trace> plain =
      drive_shared(**off, prompt, kMembers, kDecodes, CascadeMode::kOff, &*ref, &off_steps);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(off_steps, 0);
  EXPECT_FALSE((*off)->last_step().cascade);
  EXPECT_TRUE((*off)->last_step().graph_replay);

  const Agreement vs_plain = compare(*cascade, *plain, vocab);
  const Agreement vs_ref = compare(*cascade, *ref, vocab);
  std::printf(
      "[ kiln gpu ] %s cascade: vs plain decode max rel %.3g, argmax %d/%d (+%d "
      "near-ties); vs reference max rel %.3g, argmax %d/%d (+%d)\n",
      f.name.c_str(), vs_plain.max_rel, vs_plain.argmax_equal, vs_plain.positions,
      vs_plain.near_ties, vs_ref.max_rel, vs_ref.argmax_equal, vs_ref.positions, vs_ref.near_ties);
  EXPECT_LE(vs_plain.max_rel, kMaxRelError) << f.name;
  EXPECT_EQ(vs_plain.argmax_equal + vs_plain.near_ties, vs_plain.positions) << f.name;
  EXPECT_LE(vs_ref.max_rel, kMaxRelError) << f.name;
  EXPECT_GE(vs_ref.argmax_equal + vs_ref.near_ties, kMinArgmaxAgreement * vs_ref.positions)
      << f.name;

  // Greedy on their own (nothing forced): the same tokens at every step.
  absl::StatusOr<Trace> own_on =
      drive_shared(**on, prompt, kMembers, kDecodes, CascadeMode::kAuto, nullptr, &on_steps);
  absl::StatusOr<Trace> own_off =
      drive_shared(**off, prompt, kMembers, kDecodes, CascadeMode::kOff, nullptr, &off_steps);
  ASSERT_TRUE(own_on.ok()) << own_on.status();
  ASSERT_TRUE(own_off.ok()) << own_off.status();
  // (A near-tie that flipped above would send the two runs down different tokens: then only the
  // forced comparison speaks.)
  if (vs_plain.argmax_equal == vs_plain.positions) {
    EXPECT_EQ(own_on->tokens, own_off->tokens) << f.name;
  }
}

TEST_P(CudaBackendGpu, RaggedBatchMatchesEachSequenceAlone) {
  REQUIRE_GPU();
  const Fixture& f = GetParam();
  absl::StatusOr<std::string> dir = make_fixture(f);
  if (!dir.ok()) GTEST_SKIP() << f.name << ": " << dir.status().message();
  absl::StatusOr<LoadedPlan> plan = compile_plan(*dir, plan_path(*dir));
  ASSERT_TRUE(plan.ok()) << plan.status();
  BackendOptions opts;
  opts.kv_pages = 256;
  absl::StatusOr<std::unique_ptr<CudaBackend>> gpu =
      CudaBackend::create(plan->plan, opts, blob_reader(*plan));
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  const int64_t vocab = plan->plan.model.vocab_size;
  // Ragged: three lengths, one shorter than a page, one across several pages.
  const std::vector<std::vector<int32_t>> prompts = {random_prompt(5, vocab, 1),
                                                     random_prompt(f.prompt_len, vocab, 2),
                                                     random_prompt(33, vocab, 3)};
  absl::StatusOr<Trace> batched = drive(**gpu, prompts, 4);
  ASSERT_TRUE(batched.ok()) << batched.status();
  double worst = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    // The batch's own tokens, fed alone, so both see the same inputs.
    Trace forced;
    Trace batch_row;
    for (size_t s = 0; s < batched->tokens.size(); ++s) {
      forced.tokens.push_back({batched->tokens[s][i]});
      batch_row.logits.emplace_back(batched->logits[s].begin() + i * vocab,
                                    batched->logits[s].begin() + (i + 1) * vocab);
    }
    absl::StatusOr<Trace> alone = drive(**gpu, {prompts[i]}, 4, &forced);
    ASSERT_TRUE(alone.ok()) << alone.status();
    const Agreement a = compare(batch_row, *alone, vocab);
    worst = std::max(worst, a.max_rel);
    EXPECT_LE(a.max_rel, kMaxRelError) << f.name << " sequence " << i;
  }
  std::printf("[ kiln gpu ] %s: ragged batch vs alone, max rel error %.3g\n", f.name.c_str(),
              worst);
}

TEST_P(CudaBackendGpu, GraphReplayGivesEagerTokens) {
  REQUIRE_GPU();
  const Fixture& f = GetParam();
  absl::StatusOr<std::string> dir = make_fixture(f);
  if (!dir.ok()) GTEST_SKIP() << f.name << ": " << dir.status().message();
  absl::StatusOr<LoadedPlan> plan = compile_plan(*dir, plan_path(*dir));
  ASSERT_TRUE(plan.ok()) << plan.status();
  BackendOptions eager_opts, graph_opts;
  eager_opts.kv_pages = graph_opts.kv_pages = 256;
  eager_opts.cuda_graphs = false;
  graph_opts.cuda_graphs = true;
  absl::StatusOr<std::unique_ptr<CudaBackend>> eager =
      CudaBackend::create(plan->plan, eager_opts, blob_reader(*plan));
  absl::StatusOr<std::unique_ptr<CudaBackend>> graphs =
      CudaBackend::create(plan->plan, graph_opts, blob_reader(*plan));
  ASSERT_TRUE(eager.ok()) << eager.status();
  ASSERT_TRUE(graphs.ok()) << graphs.status();
  const int64_t vocab = plan->plan.model.vocab_size;
  const std::vector<std::vector<int32_t>> prompts = {random_prompt(f.prompt_len, vocab, 11),
                                                     random_prompt(9, vocab, 12)};
  absl::StatusOr<Trace> e = drive(**eager, prompts, kDecodes);
  ASSERT_TRUE(e.ok()) << e.status();
  absl::StatusOr<Trace> g = drive(**graphs, prompts, kDecodes);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_TRUE((*graphs)->last_step().graph_replay) << "the last decode step was not replayed";
  EXPECT_EQ(e->tokens, g->tokens) << f.name;
  EXPECT_EQ(e->logits, g->logits) << f.name << ": replay must run the eager launches exactly";
}

// Every matmul on the small-batch GEMV path for M <= 16 (codegen/families/gemv.h): the 6-prompt
// prefill runs the cuBLASLt GEMMs (T > 16) but the GEMV LM head (M = S = 6), the decode steps the
// GEMV everywhere, through CUDA graphs (the StepBound values are part of the graph key). The
// logits stay within the reference bounds, and the eager run gives the replayed tokens.
TEST_P(CudaBackendGpu, GemvPathMatchesReference) {
  REQUIRE_GPU();
  const Fixture& f = GetParam();
  absl::StatusOr<std::string> dir = make_fixture(f);
  if (!dir.ok()) GTEST_SKIP() << f.name << ": " << dir.status().message();
  absl::StatusOr<LoadedPlan> plan =
      compile_plan(*dir, plan_path(*dir) + ".gemv", GemvChoice::kGemv);
  ASSERT_TRUE(plan.ok()) << plan.status();
  int gemv_launches = 0, bounded_gemms = 0;
  for (const PlanLaunch& l : plan->plan.launches) {
    gemv_launches += plan->plan.kernels[l.kernel].family == KernelFamily::kGemv;
  }
  for (const PlanGemm& g : plan->plan.gemms) bounded_gemms += !g.bound.empty();
  ASSERT_GT(gemv_launches, 0);
  EXPECT_EQ(gemv_launches, bounded_gemms);
  BackendOptions opts, eager_opts;
  opts.kv_pages = eager_opts.kv_pages = 256;
  eager_opts.cuda_graphs = false;
  absl::StatusOr<std::unique_ptr<ReferenceBackend>> cpu =
      ReferenceBackend::create(plan->plan, opts, blob_reader(*plan));
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  absl::StatusOr<std::unique_ptr<CudaBackend>> gpu =
      CudaBackend::create(plan->plan, opts, blob_reader(*plan));
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  absl::StatusOr<std::unique_ptr<CudaBackend>> eager =
      CudaBackend::create(plan->plan, eager_opts, blob_reader(*plan));
  ASSERT_TRUE(eager.ok()) << eager.status();
  const int64_t vocab = plan->plan.model.vocab_size;
  const std::vector<std::vector<int32_t>> prompts = mixed_prompts(f.prompt_len, vocab, 7);
  absl::StatusOr<Trace> ref = drive(**cpu, prompts, kDecodes);
  ASSERT_TRUE(ref.ok()) << ref.status();
  absl::StatusOr<Trace> out = drive(**gpu, prompts, kDecodes, &*ref);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_TRUE((*gpu)->last_step().graph_replay);
  const Agreement a = compare(*out, *ref, vocab);
  std::printf(
      "[ kiln gpu ] %s (GEMV path, %d launches): max rel error %.3g, argmax equal %d/%d "
      "(+%d near-ties)\n",
      f.name.c_str(), gemv_launches, a.max_rel, a.argmax_equal, a.positions, a.near_ties);
  EXPECT_LE(a.max_rel, kMaxRelError) << f.name;
  // The GEMV kernel sums in another order than cuBLASLt: random-weight logits have near-ties
  // that either order may flip (mha-hd64 flipped 2 of 102 on an H200 at rel error 0.0074), so
  // a near-tie counts as agreement here; a wrong kernel moves the error, not only the argmax.
  EXPECT_GE(a.argmax_equal + a.near_ties, kMinArgmaxAgreement * a.positions) << f.name;
  absl::StatusOr<Trace> e = drive(**eager, prompts, kDecodes, &*ref);
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->logits, out->logits) << f.name << ": replay must run the eager launches exactly";
}

// The persistent decode kernel (`kiln compile --persistent`) runs the same kernels on the same
// blocks as the launches it replaces, so a decode step gives the CUDA-graph path's logits bit for
// bit, replayed from a graph or eager; a step of more sequences than its bound launches the
// stages instead. The tokens fed are the reference backend's, whose logits bound the error.
TEST_P(CudaBackendGpu, PersistentDecodeGivesTheGraphPathsBits) {
  REQUIRE_GPU();
  const Fixture& f = GetParam();
  absl::StatusOr<std::string> dir = make_fixture(f);
  if (!dir.ok()) GTEST_SKIP() << f.name << ": " << dir.status().message();
  // Bound 4: the 6-prompt batch decodes op by op, a 3-prompt batch in the persistent kernel.
  absl::StatusOr<LoadedPlan> plan = compile_plan(*dir, plan_path(*dir) + ".persistent",
                                                 GemvChoice::kHeuristic, "", PersistentOptions{4});
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_TRUE(plan->plan.persistent.has_value());
  BackendOptions on, on_eager, off;
  on.kv_pages = on_eager.kv_pages = off.kv_pages = 256;
  on_eager.cuda_graphs = false;
  on.persistent = on_eager.persistent = BackendOptions::Persistent::kOn;
  off.persistent = BackendOptions::Persistent::kOff;
  absl::StatusOr<std::unique_ptr<ReferenceBackend>> cpu =
      ReferenceBackend::create(plan->plan, on, blob_reader(*plan));
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  absl::StatusOr<std::unique_ptr<CudaBackend>> persistent =
      CudaBackend::create(plan->plan, on, blob_reader(*plan));
  ASSERT_TRUE(persistent.ok()) << persistent.status();
  ASSERT_GT((*persistent)->persistent_blocks(), 0) << (*persistent)->load_report();
  absl::StatusOr<std::unique_ptr<CudaBackend>> eager =
      CudaBackend::create(plan->plan, on_eager, blob_reader(*plan));
  ASSERT_TRUE(eager.ok()) << eager.status();
  absl::StatusOr<std::unique_ptr<CudaBackend>> graphs =
      CudaBackend::create(plan->plan, off, blob_reader(*plan));
  ASSERT_TRUE(graphs.ok()) << graphs.status();
  EXPECT_EQ((*graphs)->persistent_blocks(), 0);
  const int64_t vocab = plan->plan.model.vocab_size;
  std::vector<std::vector<int32_t>> prompts = mixed_prompts(f.prompt_len, vocab, 21);
  for (size_t batch : {prompts.size(), size_t{3}}) {
    const std::vector<std::vector<int32_t>> some(prompts.begin(), prompts.begin() + batch);
    absl::StatusOr<Trace> ref = drive(**cpu, some, kDecodes);
    ASSERT_TRUE(ref.ok()) << ref.status();
    absl::StatusOr<Trace> p = drive(**persistent, some, kDecodes, &*ref);
    ASSERT_TRUE(p.ok()) << p.status();
    EXPECT_EQ((*persistent)->last_step().persistent, batch <= 4) << batch;
    EXPECT_TRUE((*persistent)->last_step().graph_replay);
    absl::StatusOr<Trace> e = drive(**eager, some, kDecodes, &*ref);
    ASSERT_TRUE(e.ok()) << e.status();
    EXPECT_EQ((*eager)->last_step().persistent, batch <= 4);
    absl::StatusOr<Trace> g = drive(**graphs, some, kDecodes, &*ref);
    ASSERT_TRUE(g.ok()) << g.status();
    EXPECT_FALSE((*graphs)->last_step().persistent);
    EXPECT_EQ(p->logits, g->logits) << f.name << " batch " << batch
                                    << ": the persistent step must compute the graph path's bits";
    EXPECT_EQ(e->logits, g->logits) << f.name << " batch " << batch << " (eager)";
    const Agreement a = compare(*p, *ref, vocab);
    std::printf("[ kiln gpu ] %s persistent decode, batch %zu (%d blocks): max rel error %.3g "
                "vs reference, argmax equal %d/%d (+%d near-ties)\n",
                f.name.c_str(), batch, (*persistent)->persistent_blocks(), a.max_rel,
                a.argmax_equal, a.positions, a.near_ties);
    EXPECT_LE(a.max_rel, kMaxRelError) << f.name;
    EXPECT_GE(a.argmax_equal + a.near_ties, kMinArgmaxAgreement * a.positions) << f.name;
  }
}

// An fp8e4m3 KV cache (`--kv-dtype fp8e4m3`, issue 14): CudaBackend against the reference backend
// on the same fp8e4m3 plan, the same inputs, one prefill and 16 decodes (the persistent decode
// kernel on for batches of up to 4). Bound: each side quantizes its own K/V rows, and the GPU's
// (from bf16 GEMMs) differ from the reference's fp32 rows by bf16 rounding, 2^-8 relatively; a
// code then lands one e4m3 step (2^-3 of it at most) away where that nudge crosses a rounding
// boundary, for about 2^-8 / 2^-4 = 1/16 of the elements: an expected relative perturbation of
// the K/V rows of 2^-4 * 2^-4 = 2^-8, as large again as the bf16 rounding the 16-bit bound
// covers. So twice the bf16 bound for the logits' relative error, and 97% argmax agreement (the
// fixtures' random weights make near-ties common) with near-ties counted as in the bf16 test.
constexpr double kMaxRelErrorFp8 = 2 * kMaxRelError;
constexpr double kMinArgmaxAgreementFp8 = 0.97;

TEST_P(CudaBackendGpu, Fp8KvLogitsMatchReference) {
  REQUIRE_GPU();
  const Fixture& f = GetParam();
  absl::StatusOr<std::string> dir = make_fixture(f);
  if (!dir.ok()) GTEST_SKIP() << f.name << ": " << dir.status().message();
  absl::StatusOr<LoadedPlan> plan =
      compile_plan(*dir, plan_path(*dir) + ".fp8", GemvChoice::kHeuristic, "", PersistentOptions{4},
                   DType::kFP8E4M3);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->plan.kv.dtype, DType::kFP8E4M3);
  BackendOptions opts;
  opts.kv_pages = 256;
  // On, not auto: auto keeps whichever way a timed batch-1 decode was faster, and the persistent
  // kernel's fp8e4m3 path is under test here whatever the timing says.
  opts.persistent = BackendOptions::Persistent::kOn;
  absl::StatusOr<std::unique_ptr<ReferenceBackend>> cpu =
      ReferenceBackend::create(plan->plan, opts, blob_reader(*plan));
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  absl::StatusOr<std::unique_ptr<CudaBackend>> gpu =
      CudaBackend::create(plan->plan, opts, blob_reader(*plan));
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  std::printf("[ kiln gpu ] %s fp8e4m3 KV: %s\n", f.name.c_str(), (*gpu)->load_report().c_str());
  EXPECT_NE((*gpu)->load_report().find("fp8e4m3 with per-head scales"), std::string::npos);
  const int64_t vocab = plan->plan.model.vocab_size;
  for (size_t batch : {size_t{6}, size_t{3}}) {  // op by op, then the persistent kernel
    std::vector<std::vector<int32_t>> prompts = mixed_prompts(f.prompt_len, vocab, 7);
    prompts.resize(batch);
    absl::StatusOr<Trace> ref = drive(**cpu, prompts, kDecodes);
    ASSERT_TRUE(ref.ok()) << ref.status();
    absl::StatusOr<Trace> out = drive(**gpu, prompts, kDecodes, &*ref);
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ((*gpu)->last_step().persistent, batch <= 4);
    const Agreement a = compare(*out, *ref, vocab);
    std::printf(
        "[ kiln gpu ] %s fp8e4m3 KV, batch %zu: max rel error %.3g, argmax equal %d/%d "
        "(+%d near-ties)\n",
        f.name.c_str(), batch, a.max_rel, a.argmax_equal, a.positions, a.near_ties);
    EXPECT_LE(a.max_rel, kMaxRelErrorFp8) << f.name;
    EXPECT_GE(a.argmax_equal + a.near_ties, kMinArgmaxAgreementFp8 * a.positions) << f.name;
  }
}

// The same KV budget holds 2D / (D + 4) times the tokens with an fp8e4m3 cache (codes of 1 byte
// and a 4-byte scale per row of D, against 2 bytes per element): each backend sizes its pool from
// its plan's KvLayout, floor(budget / bytes per page), and says so in its report.
TEST_P(CudaBackendGpu, Fp8KvPoolHoldsAboutTwiceTheTokens) {
  REQUIRE_GPU();
  const Fixture& f = GetParam();
  absl::StatusOr<std::string> dir = make_fixture(f);
  if (!dir.ok()) GTEST_SKIP() << f.name << ": " << dir.status().message();
  absl::StatusOr<LoadedPlan> bf16 = compile_plan(*dir, plan_path(*dir));
  ASSERT_TRUE(bf16.ok()) << bf16.status();
  absl::StatusOr<LoadedPlan> fp8 = compile_plan(*dir, plan_path(*dir) + ".fp8pool",
                                                GemvChoice::kHeuristic, "", {}, DType::kFP8E4M3);
  ASSERT_TRUE(fp8.ok()) << fp8.status();
  BackendOptions opts;
  opts.kv_cache_gb = 1.0 / 512;  // 2 MiB: under the plans' 1024-page bound for every fixture
  const int64_t budget = static_cast<int64_t>(opts.kv_cache_gb * (1 << 30));
  const int64_t want_bf16 = budget / bf16->plan.kv.bytes_per_page();
  const int64_t want_fp8 = budget / fp8->plan.kv.bytes_per_page();
  ASSERT_LE(want_fp8, fp8->plan.limits.max_pool_pages) << "the NP bound would cap the pool";
  auto a = CudaBackend::create(bf16->plan, opts, blob_reader(*bf16));
  ASSERT_TRUE(a.ok()) << a.status();
  auto b = CudaBackend::create(fp8->plan, opts, blob_reader(*fp8));
  ASSERT_TRUE(b.ok()) << b.status();
  std::printf("[ kiln gpu ] %s: %lld bf16 pages, %lld fp8e4m3 pages in %.4f GiB: %s\n",
              f.name.c_str(), static_cast<long long>((*a)->kv_pages()),
              static_cast<long long>((*b)->kv_pages()), opts.kv_cache_gb,
              (*b)->load_report().c_str());
  EXPECT_EQ((*a)->kv_pages(), want_bf16);
  EXPECT_EQ((*b)->kv_pages(), want_fp8);
  const double d = fp8->plan.kv.head_dim;
  EXPECT_NEAR(static_cast<double>(want_fp8) / want_bf16, 2 * d / (d + 4), 0.02);
  EXPECT_NE((*b)->load_report().find(absl::StrCat(want_fp8 * fp8->plan.kv.page_size, " tokens")),
            std::string::npos);
}

// Prefix reuse on the GPU with an fp8e4m3 cache: a 21-token prefix (one full page of 16 and 5
// tokens of the next) computed, cached, and reused by a prompt (the full page shared, the partial
// page copied on write with its scales by copy_kv_pages) gives the logits of the same prompt
// computed from scratch, within the 16-bit bound (the two runs batch the prefix differently), and
// the same greedy token, then the same decode.
TEST_P(CudaBackendGpu, Fp8KvPrefixReuseGivesTheLogitsOfRecomputing) {
  REQUIRE_GPU();
  const Fixture& f = GetParam();
  absl::StatusOr<std::string> dir = make_fixture(f);
  if (!dir.ok()) GTEST_SKIP() << f.name << ": " << dir.status().message();
  absl::StatusOr<LoadedPlan> plan = compile_plan(*dir, plan_path(*dir) + ".fp8reuse",
                                                 GemvChoice::kHeuristic, "", {}, DType::kFP8E4M3);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->plan.kv.page_size, 16);
  BackendOptions opts;
  opts.kv_pages = 64;
  auto gpu = CudaBackend::create(plan->plan, opts, blob_reader(*plan));
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  auto tables = KvPageTables::create({16, static_cast<int32_t>((*gpu)->kv_pages())});
  ASSERT_TRUE(tables.ok());
  PrefixCache cache(*tables);
  const int64_t vocab = plan->plan.model.vocab_size;
  auto step = [&](SeqId seq, const std::vector<int32_t>& toks) -> std::vector<float> {
    auto meta = build_step_metadata(*tables, {{seq, static_cast<int32_t>(toks.size())}});
    EXPECT_TRUE(meta.ok()) << meta.status();
    if (!meta.ok()) return {};
    EXPECT_TRUE((*gpu)->copy_kv_pages(tables->take_pending_copies()).ok());
    StepRequest req{StepInputs{toks, *meta}, {SequenceSampling{}}, true};
    auto r = (*gpu)->run_step(req);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->logits : std::vector<float>{};
  };
  const std::vector<int32_t> prefix = random_prompt(21, vocab, 31);
  const std::vector<int32_t> suffix = random_prompt(9, vocab, 32);
  SeqId first = tables->add_sequence();
  step(first, prefix);
  ASSERT_TRUE(cache.insert(prefix, first, 21, /*include_partial_page=*/true).ok());
  ASSERT_TRUE(tables->free(first).ok());
  std::vector<int32_t> prompt = prefix;
  prompt.insert(prompt.end(), suffix.begin(), suffix.end());
  auto hit = cache.acquire(prompt, static_cast<int64_t>(prompt.size()) - 1);
  ASSERT_TRUE(hit.ok()) << hit.status();
  ASSERT_EQ(hit->cached_tokens, 21);
  Trace reused, fresh;
  reused.logits.push_back(step(hit->seq, suffix));
  const SeqId again = tables->add_sequence();
  fresh.logits.push_back(step(again, prompt));
  const auto& row = fresh.logits[0];
  const int32_t next = static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
  reused.logits.push_back(step(hit->seq, {next}));
  fresh.logits.push_back(step(again, {next}));
  const Agreement a = compare(reused, fresh, vocab);
  std::printf("[ kiln gpu ] %s fp8e4m3 prefix reuse: max rel error %.3g, argmax equal %d/%d\n",
              f.name.c_str(), a.max_rel, a.argmax_equal, a.positions);
  EXPECT_LE(a.max_rel, kMaxRelError) << f.name;
  EXPECT_EQ(a.argmax_equal + a.near_ties, a.positions) << f.name;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaBackendGpu, ::testing::ValuesIn(fixtures()),
                         [](const auto& info) {
                           std::string n = info.param.name;
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

TEST(CudaBackendGpuGguf, QuantizedGgufMatchesItsCpuRun) {
  REQUIRE_GPU();
  const Fixture f{"tiny-q4_1", "tiny", "", 21};
  absl::StatusOr<std::string> dir = make_fixture(f, "--no-hf --gguf-type q4_1");
  if (!dir.ok()) GTEST_SKIP() << "needs the gguf Python package: " << dir.status().message();
  absl::StatusOr<LoadedPlan> plan = compile_plan(*dir + "/model.q4_1.gguf", plan_path(*dir));
  ASSERT_TRUE(plan.ok()) << plan.status();
  BackendOptions opts;
  opts.kv_pages = 64;
  absl::StatusOr<std::unique_ptr<ReferenceBackend>> cpu =
      ReferenceBackend::create(plan->plan, opts, blob_reader(*plan));
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  absl::StatusOr<std::unique_ptr<CudaBackend>> gpu =
      CudaBackend::create(plan->plan, opts, blob_reader(*plan));
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  EXPECT_NE((*gpu)->load_report().find("converted on the host"), std::string::npos)
      << (*gpu)->load_report();
  const int64_t vocab = plan->plan.model.vocab_size;
  const std::vector<std::vector<int32_t>> prompts = mixed_prompts(f.prompt_len, vocab, 5);
  absl::StatusOr<Trace> ref = drive(**cpu, prompts, kDecodes);
  ASSERT_TRUE(ref.ok()) << ref.status();
  absl::StatusOr<Trace> out = drive(**gpu, prompts, kDecodes, &*ref);
  ASSERT_TRUE(out.ok()) << out.status();
  const Agreement a = compare(*out, *ref, vocab);
  std::printf("[ kiln gpu ] q4_1 gguf: max rel error %.3g, argmax equal %d/%d (+%d near-ties)\n",
              a.max_rel, a.argmax_equal, a.positions, a.near_ties);
  EXPECT_LE(a.max_rel, kMaxRelError);
  // Near-ties count as agreement here as in the other fixtures' tests: a random-weight model's
  // logits have rows whose top two differ by less than the GEMV's reordered sums move them.
  EXPECT_GE(a.argmax_equal + a.near_ties, kMinArgmaxAgreement * a.positions);
}

// The first fixture compiled for this GPU; `skip` says why not when the fixture cannot be made
// here (the generator's Python packages are missing).
absl::StatusOr<LoadedPlan> first_fixture_plan(std::string& skip) {
  absl::StatusOr<std::string> dir = make_fixture(fixtures()[0]);
  if (!dir.ok()) {
    skip = std::string(dir.status().message());
    return dir.status();
  }
  return compile_plan(*dir, plan_path(*dir));
}

// `kiln serve` opens the backend on the main thread and steps it on its engine thread, which has
// no CUDA context of its own: a step there runs and gives the tokens and logits it gives at home.
TEST(CudaBackendGpuThreads, StepsOnAnotherThreadMatchTheOpeningThread) {
  REQUIRE_GPU();
  std::string skip;
  absl::StatusOr<LoadedPlan> plan = first_fixture_plan(skip);
  if (!skip.empty()) GTEST_SKIP() << skip;
  ASSERT_TRUE(plan.ok()) << plan.status();
  BackendOptions opts;
  opts.kv_pages = 64;
  absl::StatusOr<std::unique_ptr<CudaBackend>> home =
      CudaBackend::create(plan->plan, opts, blob_reader(*plan));
  absl::StatusOr<std::unique_ptr<CudaBackend>> away =
      CudaBackend::create(plan->plan, opts, blob_reader(*plan));
  ASSERT_TRUE(home.ok()) << home.status();
  ASSERT_TRUE(away.ok()) << away.status();
  const std::vector<std::vector<int32_t>> prompts =
      mixed_prompts(fixtures()[0].prompt_len, plan->plan.model.vocab_size, 31);
  absl::StatusOr<Trace> here = drive(**home, prompts, 4);
  ASSERT_TRUE(here.ok()) << here.status();
  absl::StatusOr<Trace> there = absl::UnknownError("the thread did not run");
  std::thread([&] { there = drive(**away, prompts, 4); }).join();
  ASSERT_TRUE(there.ok()) << there.status();
  EXPECT_EQ(here->tokens, there->tokens);
  EXPECT_EQ(here->logits, there->logits);
}

// `kiln run --check` (runtime/check/): on a correct plan every node that launches work agrees with
// the reference running the same op on the same inputs, over a mixed prefill and two decode steps,
// and the checked steps give the tokens of unchecked ones.
TEST(CudaBackendGpuCheck, EveryNodeOfACorrectPlanAgrees) {
  REQUIRE_GPU();
  std::string skip;
  absl::StatusOr<LoadedPlan> plan = first_fixture_plan(skip);
  if (!skip.empty()) GTEST_SKIP() << skip;
  ASSERT_TRUE(plan.ok()) << plan.status();
  BackendOptions opts;
  opts.kv_pages = 64;
  auto gpu = CudaBackend::create(plan->plan, opts, blob_reader(*plan));
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  BackendOptions ro;
  ro.kv_pages = 1;
  auto ref = ReferenceBackend::create(plan->plan, ro, blob_reader(*plan));
  ASSERT_TRUE(ref.ok()) << ref.status();
  auto checked = CheckedBackend::create(**gpu, (*ref)->graph(), (*ref)->params(), 3);
  ASSERT_TRUE(checked.ok()) << checked.status();
  const auto prompts = mixed_prompts(fixtures()[0].prompt_len, plan->plan.model.vocab_size, 7);
  absl::StatusOr<Trace> observed = drive(**checked, prompts, 2);
  ASSERT_TRUE(observed.ok()) << observed.status();
  const std::vector<NodeCheck>& checks = (*checked)->checks();
  std::printf("%s", format_checks(checks).c_str());
  EXPECT_EQ((*checked)->first_divergence(), nullptr);
  bool prefill_attention = false, decode_attention = false, gemm = false;
  for (const NodeCheck& c : checks) {
    if (c.op == "flash_attention") (c.decode ? decode_attention : prefill_attention) = true;
    gemm |= c.kernel.find("cublasLt") != std::string::npos;
  }
  EXPECT_TRUE(prefill_attention && decode_attention && gemm) << "every kind of op is checked";
  auto plain = CudaBackend::create(plan->plan, opts, blob_reader(*plan));
  ASSERT_TRUE(plain.ok()) << plain.status();
  absl::StatusOr<Trace> unchecked = drive(**plain, prompts, 2);
  ASSERT_TRUE(unchecked.ok()) << unchecked.status();
  EXPECT_EQ(observed->tokens, unchecked->tokens);
}

// `kiln run --check` over an fp8e4m3 KV plan: every node agrees with the reference within its
// FP8-aware tolerance (runtime/check/node_check.h): the attention outputs within their
// activations' bf16 tolerance (both sides read the same codes), the caches' codes within one
// e4m3 step, their scales within f32's.
TEST(CudaBackendGpuCheck, EveryNodeOfAnFp8KvPlanAgrees) {
  REQUIRE_GPU();
  absl::StatusOr<std::string> dir = make_fixture(fixtures()[1]);  // GQA, head_dim 128
  if (!dir.ok()) GTEST_SKIP() << dir.status().message();
  absl::StatusOr<LoadedPlan> plan = compile_plan(*dir, plan_path(*dir) + ".fp8check",
                                                 GemvChoice::kHeuristic, "", {}, DType::kFP8E4M3);
  ASSERT_TRUE(plan.ok()) << plan.status();
  BackendOptions opts;
  opts.kv_pages = 64;
  auto gpu = CudaBackend::create(plan->plan, opts, blob_reader(*plan));
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  BackendOptions ro;
  ro.kv_pages = 1;
  auto ref = ReferenceBackend::create(plan->plan, ro, blob_reader(*plan));
  ASSERT_TRUE(ref.ok()) << ref.status();
  auto checked = CheckedBackend::create(**gpu, (*ref)->graph(), (*ref)->params(), 3);
  ASSERT_TRUE(checked.ok()) << checked.status();
  const auto prompts = mixed_prompts(fixtures()[1].prompt_len, plan->plan.model.vocab_size, 7);
  absl::StatusOr<Trace> observed = drive(**checked, prompts, 2);
  ASSERT_TRUE(observed.ok()) << observed.status();
  const std::vector<NodeCheck>& checks = (*checked)->checks();
  std::printf("%s", format_checks(checks).c_str());
  EXPECT_EQ((*checked)->first_divergence(), nullptr);
  int attention_outputs = 0, codes = 0;
  for (const NodeCheck& c : checks) {
    if (c.op != "flash_attention") continue;
    if (c.tolerance == kFp8CodeTolerance) {
      ++codes;
    } else if (c.tolerance == 2e-2) {
      ++attention_outputs;
    }
  }
  EXPECT_GT(attention_outputs, 0) << "attention outputs held to the bf16 tolerance";
  EXPECT_GT(codes, 0) << "the caches' codes checked";
}

// A wrong kernel planted in a plan (its first rmsnorm's epsilon edited in the final IR, compiled
// with --from-ir) is named by --check, given the original plan as the reference: in the library
// and through `kiln run --check --check-against` (exit code 3 and the "first divergent op" line).
TEST(CudaBackendGpuCheck, NamesAPlantedWrongEpsilon) {
  REQUIRE_GPU();
  std::string skip;
  absl::StatusOr<LoadedPlan> good = first_fixture_plan(skip);
  if (!skip.empty()) GTEST_SKIP() << skip;
  ASSERT_TRUE(good.ok()) << good.status();
  absl::StatusOr<std::string> dir = make_fixture(fixtures()[0]);
  ASSERT_TRUE(dir.ok());
  std::string text = good->plan.ir;
  std::smatch m;
  const std::regex first_norm(R"((= rmsnorm[a-z_]*\([^\n]*\{[^\n]*eps = )([0-9.e+-]+))");
  ASSERT_TRUE(std::regex_search(text, m, first_norm)) << "no rmsnorm with an eps in the IR";
  text.replace(m.position(2), m.length(2), "0.5");
  const std::string kir = absl::StrCat(*dir, "/edited.", getpid(), ".kir");
  std::ofstream(kir) << text;
  const std::string bad_path = absl::StrCat(*dir, "/edited.", getpid(), ".kplan");
  absl::StatusOr<LoadedPlan> bad = compile_plan(*dir, bad_path, GemvChoice::kHeuristic, kir);
  ASSERT_TRUE(bad.ok()) << bad.status();
  auto graph = parse_graph(bad->plan.ir);
  ASSERT_TRUE(graph.ok()) << graph.status();
  int planted = -1;
  for (int i = 0; i < (*graph)->num_nodes() && planted < 0; ++i) {
    if (op_name((*graph)->nodes()[i]->op).rfind("rmsnorm", 0) == 0) planted = i;
  }
  ASSERT_GE(planted, 0);

  BackendOptions opts;
  opts.kv_pages = 64;
  auto gpu = CudaBackend::create(bad->plan, opts, blob_reader(*bad));
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  BackendOptions ro;
  ro.kv_pages = 1;
  auto ref = ReferenceBackend::create(good->plan, ro, blob_reader(*good));
  ASSERT_TRUE(ref.ok()) << ref.status();
  auto checked = CheckedBackend::create(**gpu, (*ref)->graph(), (*ref)->params(), 1);
  ASSERT_TRUE(checked.ok()) << checked.status();
  const auto prompts = mixed_prompts(fixtures()[0].prompt_len, good->plan.model.vocab_size, 9);
  ASSERT_TRUE(drive(**checked, prompts, 0).ok());
  // The planted node, or (at GEMV sizes, where a GEMV normalizes its input in its prologue and
  // the rmsnorm launches nothing) the node whose launch did its work.
  const std::string planted_name =
      absl::StrCat("node ", planted, " ", op_name((*graph)->nodes()[planted]->op));
  auto names_planted = [&](const NodeCheck& c) {
    return c.node == planted ||
           std::find(c.folded.begin(), c.folded.end(), planted_name) != c.folded.end();
  };
  const NodeCheck* first = (*checked)->first_divergence();
  ASSERT_NE(first, nullptr) << format_checks((*checked)->checks());
  EXPECT_TRUE(names_planted(*first)) << format_checks((*checked)->checks());
  for (const NodeCheck& c : (*checked)->checks()) {
    if (!c.ok()) EXPECT_TRUE(names_planted(c)) << "only the planted node diverges: " << c.op;
  }

  const std::string out = absl::StrCat(*dir, "/check.", getpid(), ".txt");
  const std::string cmd = absl::StrCat(KILN_BINARY, " run ", bad_path, " --check --check-against ",
                                       plan_path(*dir), " -p 'The sky is' -n 3 > ", out, " 2>&1");
  const int rc = std::system(cmd.c_str());
  std::ifstream in(out);
  const std::string printed((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::printf("%s\n", printed.substr(printed.size() > 1500 ? printed.size() - 1500 : 0).c_str());
  ASSERT_TRUE(WIFEXITED(rc));
  EXPECT_EQ(WEXITSTATUS(rc), 3) << printed;
  const size_t line = printed.find("first divergent op: ");
  ASSERT_NE(line, std::string::npos) << printed;
  EXPECT_NE(printed.substr(line, printed.find('\n', line) - line).find(planted_name),
            std::string::npos)
      << printed;
}

TEST(CudaBackendGpuErrors, StepOutsideThePoolIsAnErrorNotACrash) {
  REQUIRE_GPU();
  std::string skip;
  absl::StatusOr<LoadedPlan> plan = first_fixture_plan(skip);
  if (!skip.empty()) GTEST_SKIP() << skip;
  ASSERT_TRUE(plan.ok()) << plan.status();
  BackendOptions opts;
  opts.kv_pages = 4;
  absl::StatusOr<std::unique_ptr<CudaBackend>> gpu =
      CudaBackend::create(plan->plan, opts, blob_reader(*plan));
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  StepRequest req;
  req.inputs.tokens = {5};
  req.inputs.metadata.positions = {0};
  req.inputs.metadata.slot_mapping = {4 * 16};  // one past the pool
  req.inputs.metadata.qo_indptr = {0, 1};
  req.inputs.metadata.kv_page_indptr = {0, 1};
  req.inputs.metadata.kv_page_indices = {4};
  req.inputs.metadata.kv_last_page_len = {1};
  req.inputs.metadata.max_kv_len = 1;
  req.sampling = {SequenceSampling{}};
  absl::StatusOr<StepResult> r = (*gpu)->run_step(req);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("outside the pool"), std::string::npos) << r.status();
}

}  // namespace
}  // namespace kiln
