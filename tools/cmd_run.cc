// `kiln run`: generate text from a plan (or a model compiled in memory into one), streamed as it
// is produced. A token's path: load_plan (read_plan of a .kplan, or build_plan in memory) ->
// ReferenceBackend::create (a Backend) -> Engine::generate -> Backend::run_step per step ->
// the engine's TextStream -> stdout.
#include <cstdio>
#include <fstream>
#include <iostream>

#include <cstring>
#include <variant>

#include "absl/strings/str_format.h"
#include "codegen/compile_model.h"
#include "ir/printer.h"
#include "models/chat_template.h"
#include "models/tokenizer_source.h"
#include "plan/plan_file.h"
#include "runtime/engine/engine.h"
#include "runtime/reference/reference_backend.h"
#include "tools/commands.h"

namespace kiln::tools {
namespace {

struct RunOptions {
  std::string model;
  std::string prompt;
  bool chat = false;
  std::string system;
  int64_t max_new_tokens = 128;
  float temperature = 0.0f;
  int32_t top_k = 0;
  float top_p = 1.0f;
  uint64_t seed = 0;
  std::vector<std::string> stop;
  std::string device = "auto";
  std::string weights_dtype = "bf16";
  int threads = 0;
  int64_t kv_pages = 0;
  int64_t max_context = 0;
  bool verify_weights = false;
};

// codegen's GPU lowering has no f32 attention kernels, so an f32 plan (the reference backend's
// exact mode) is built at bf16 and then given the f32 step graph and its KV layout: the reference
// backend reads only the IR, the weights and the KV layout. TODO(runtime): drop once
// build_plan(build_kernels = false) accepts graphs that have no GPU lowering.
absl::StatusOr<CompiledPlan> build_cpu_plan(CompileOptions o) {
  o.build_kernels = false;
  if (o.limits.dtype != DType::kF32) return build_plan(o);
  const StepLimits limits = o.limits;
  o.limits.dtype = DType::kBF16;
  absl::StatusOr<CompiledPlan> built = build_plan(o);
  if (!built.ok()) return built.status();
  Graph g;
  if (absl::Status s = build_llama(built->plan.model, limits, g); !s.ok()) return s;
  PassContext ctx;
  if (absl::Status s = run_compile_pipeline(g, ctx); !s.ok()) return s;
  Plan& p = built->plan;
  p.ir = print_graph(g);
  p.limits.dtype = limits.dtype;
  p.kv = *ctx.kv_layout;
  p.memory = ctx.memory_plan;
  p.kernels.clear();
  p.launches.clear();
  p.gemms.clear();
  p.workspaces.clear();
  p.aliases.clear();
  p.constants.clear();
  return built;
}

// The plan to run and where its blobs live: a .kplan file as written, or the model compiled in
// memory (no kernels: the reference backend interprets the IR) with the limits `kiln run` always
// used. Either way the same plan reaches the backend.
struct RunnablePlan {
  std::variant<LoadedPlan, CompiledPlan> source;
  const Plan& plan() const {
    return std::visit([](const auto& p) -> const Plan& { return p.plan; }, source);
  }
  std::string_view blob(int i) const {
    return std::visit([i](const auto& p) { return p.blob(i); }, source);
  }
};

bool is_plan_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[sizeof(kPlanMagic)] = {};
  return in.read(magic, sizeof(magic)) && std::memcmp(magic, kPlanMagic, sizeof(magic)) == 0;
}

absl::StatusOr<RunnablePlan> load_plan(const RunOptions& o) {
  if (is_plan_file(o.model)) {
    PlanLoadOptions lo;
    lo.plan_path_for_messages = o.model;
    lo.weights = WeightCheck::kNone;  // the backend checks them as it maps them
    absl::StatusOr<LoadedPlan> loaded = read_plan(o.model, lo);
    if (!loaded.ok()) return loaded.status();
    return RunnablePlan{std::move(*loaded)};
  }
  CompileOptions co;
  co.model = o.model;
  co.limits.max_seqs = 1;
  co.limits.max_context = o.max_context;
  co.limits.dtype = o.weights_dtype == "f32" ? DType::kF32 : DType::kBF16;
  absl::StatusOr<CompiledPlan> built = build_cpu_plan(co);
  if (!built.ok()) return built.status();
  return RunnablePlan{std::move(*built)};
}

// A prompt as token ids: the chat template when asked for (its stop ids join the model's EOS).
absl::StatusOr<GenerationRequest> make_request(const RunOptions& o, const Tokenizer& tok,
                                               const ModelConfig& config) {
  GenerationRequest req;
  std::string text = o.prompt;
  if (o.chat) {
    absl::StatusOr<ChatTemplate> tmpl = ChatTemplate::for_tokenizer(tok);
    if (!tmpl.ok())
      return absl::InvalidArgumentError(absl::StrCat("--chat: ", tmpl.status().message()));
    std::vector<ChatMessage> messages;
    if (!o.system.empty()) messages.push_back({"system", o.system});
    messages.push_back({"user", o.prompt});
    text = tmpl->render(messages, /*add_generation_prompt=*/true);
    req.stop_ids = tmpl->stop_ids(tok);
    for (int32_t id : config.eos_ids) req.stop_ids.push_back(id);
  }
  req.prompt = tok.encode(text, /*parse_special=*/true, tok.add_bos());
  req.max_new_tokens = o.max_new_tokens;
  req.sampling = {o.temperature, o.top_k, o.top_p, o.seed};
  req.stop_strings = o.stop;
  return req;
}

int fail(const absl::Status& s) {
  std::cerr << "kiln run: " << s.message() << "\n";
  return 1;
}

int run(const RunOptions& o) {
  if (o.device == "cuda") {
    std::cerr << "kiln run: the CUDA backend is not available yet; use --device cpu (or auto)\n";
    return 2;
  }
  if (o.device == "auto") std::cerr << "kiln run: using the CPU reference backend\n";
  absl::StatusOr<RunnablePlan> runnable = load_plan(o);
  if (!runnable.ok()) return fail(runnable.status());
  const Plan& plan = runnable->plan();
  // The backend first: it checks the referenced weight files before anything else reads them.
  BackendOptions bo;
  bo.num_threads = o.threads;
  bo.verify_weights = o.verify_weights;
  bo.kv_pages = o.kv_pages;
  absl::StatusOr<std::unique_ptr<ReferenceBackend>> backend = ReferenceBackend::create(
      plan, bo, [&](int i) -> absl::StatusOr<std::string_view> { return runnable->blob(i); });
  if (!backend.ok()) return fail(backend.status());
  absl::StatusOr<Tokenizer> tok = load_tokenizer(plan.tokenizer_path);
  if (!tok.ok()) return fail(tok.status());
  absl::StatusOr<GenerationRequest> req = make_request(o, *tok, plan.model);
  if (!req.ok()) return fail(req.status());

  Engine engine(**backend, *tok);
  GenerationStats stats;
  absl::StatusOr<std::vector<GenerationResult>> out = engine.generate(
      {*req},
      [](size_t, const std::string& piece) {
        std::fwrite(piece.data(), 1, piece.size(), stdout);
        std::fflush(stdout);
      },
      &stats);
  std::fputc('\n', stdout);
  if (!out.ok()) return fail(out.status());
  const GenerationResult& r = (*out)[0];
  if (r.finish == FinishReason::kContextFull) {
    std::cerr << "kiln run: stopped: reached the context length\n";
  }
  std::cerr << absl::StrFormat(
      "kiln run: %d prompt tokens at %.1f tok/s, %d generated at %.1f tok/s (stop: %s)\n",
      stats.prompt_tokens,
      stats.prefill_seconds > 0 ? stats.prompt_tokens / stats.prefill_seconds : 0.0,
      stats.generated_tokens,
      stats.decode_seconds > 0 ? (stats.generated_tokens - 1) / stats.decode_seconds : 0.0,
      finish_reason_name(r.finish));
  return 0;
}

}  // namespace

void add_run_command(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<RunOptions>();
  CLI::App* cmd =
      app.add_subcommand("run", "Generate text from a plan (.kplan) or a model (HF dir or .gguf)");
  cmd->add_option("model", o->model, ".kplan file, model directory or .gguf file")->required();
  cmd->add_option("-p,--prompt", o->prompt, "prompt text")->required();
  cmd->add_flag("--chat", o->chat, "wrap the prompt in the model's chat template");
  cmd->add_option("--system", o->system, "system message (with --chat)");
  cmd->add_option("-n,--max-new-tokens", o->max_new_tokens, "tokens to generate")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--temperature", o->temperature, "0 = greedy")->capture_default_str();
  cmd->add_option("--top-k", o->top_k, "0 = off")->capture_default_str();
  cmd->add_option("--top-p", o->top_p, "nucleus mass")->capture_default_str();
  cmd->add_option("--seed", o->seed, "sampling seed")->capture_default_str();
  cmd->add_option("--stop", o->stop, "stop string (repeatable)");
  cmd->add_option("--device", o->device, "cpu, cuda or auto")
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}))
      ->capture_default_str();
  cmd->add_option("--weights-dtype", o->weights_dtype,
                  "a model compiled in memory: bf16 (fast) or f32 (exact); a plan keeps its own")
      ->check(CLI::IsMember({"bf16", "f32"}))
      ->capture_default_str();
  cmd->add_option("--threads", o->threads, "CPU threads (0 = all cores)")->capture_default_str();
  cmd->add_option("--kv-pages", o->kv_pages,
                  "KV cache pages (0 = every sequence at full context, up to 4 GiB)")
      ->capture_default_str();
  cmd->add_option("--max-context", o->max_context,
                  "a model compiled in memory: cap the context length (0 = the model's)")
      ->capture_default_str();
  cmd->add_flag("--verify-weights", o->verify_weights,
                "check every referenced weight file's checksum before running");
  cmd->callback([o, exit_code] { *exit_code = run(*o); });
}

}  // namespace kiln::tools
