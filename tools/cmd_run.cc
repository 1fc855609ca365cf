// `kiln run`: generate text from a plan (or a model compiled in memory into one), streamed as it
// is produced. A token's path: load_plan (read_plan of a .kplan, or build_plan in memory) ->
// open_backend (the GPU or the CPU reference backend, tools/run_backend.h) -> Engine::generate ->
// Backend::run_step per step -> the engine's TextStream -> stdout.
#include <cstdio>
#include <fstream>
#include <iostream>

#include <cstring>
#include <optional>
#include <variant>

#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "codegen/compile_model.h"
#include "ir/printer.h"
#include "models/chat_template.h"
#include "models/tokenizer_source.h"
#include "plan/plan_file.h"
#include "runtime/check/checked_backend.h"
#include "runtime/cuda/driver.h"
#include "runtime/engine/engine.h"
#include "runtime/reference/reference_backend.h"
#include "tools/commands.h"
#include "tools/kv_dtype_flag.h"
#include "tools/run_backend.h"

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
  std::string kv_dtype = "auto";  // a model compiled in memory: the KV cache's dtype
  int threads = 0;
  int64_t kv_pages = 0;
  int64_t max_context = 0;
  bool verify_weights = false;
  bool q8_activations = false;       // cpu, native weights: llama.cpp-style 8-bit activations
  double kv_cache_gb = 0;            // cuda: KV pool size (GiB)
  double gpu_memory_fraction = 0.9;  // cuda: else this fraction of free memory
  bool debug_sync = false;           // cuda: synchronize and check after every launch
  bool cuda_graphs = true;           // cuda: replay decode steps from CUDA graphs
  std::string persistent = "auto";   // cuda: the plan's persistent decode kernel: auto|on|off
  std::string cascade = "off";  // auto|off; see add_cascade_option for why off by default
  bool check = false;                // cuda: check every node against the reference backend
  std::string check_against;         // --check: the reference's plan (default: the run plan)
  int check_steps = 2;               // --check: steps checked (the prefill, then decode steps)
};

// The plan `kiln run <model>` builds in memory: no kernels (the reference backend interprets the
// IR); graphs with no GPU lowering (f32) still get a plan.
absl::StatusOr<CompiledPlan> build_cpu_plan(CompileOptions o) {
  o.build_kernels = false;
  return build_plan(o);
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
  // native: a GGUF's block weights stay as stored (the backend reads them in place); its other
  // tensors (norms) are f32 in the file and stay f32. A checkpoint's float weights keep bf16.
  if (o.weights_dtype == "native" && absl::EndsWith(o.model, ".gguf")) co.limits.dtype = DType::kF32;
  co.limits.kv_dtype = kv_dtype_of(o.kv_dtype);
  // For the GPU, the kernels too (NVRTC through the kernel cache), for this GPU's arch.
  if (o.device != "cpu" && co.limits.dtype != DType::kF32) {
    absl::StatusOr<GpuDevice> gpu = open_gpu();
    if (gpu.ok()) {
      co.arch = gpu->arch();
      absl::StatusOr<CompiledPlan> built = build_plan(co);
      if (!built.ok()) return built.status();
      return RunnablePlan{std::move(*built)};
    }
    if (o.device == "cuda") {
      return absl::UnavailableError(absl::StrCat("no GPU found: ", gpu.status().message()));
    }
  }
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
    absl::StatusOr<std::string> rendered = tmpl->render(messages, /*add_generation_prompt=*/true);
    if (!rendered.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--chat: ", rendered.status().message()));
    }
    text = *std::move(rendered);
    req.stop_ids = tmpl->stop_ids(tok);
    for (int32_t id : config.eos_ids) req.stop_ids.push_back(id);
  }
  // A chat template writes its own BOS (apply_chat_template's text is encoded without specials).
  req.prompt = tok.encode(text, /*parse_special=*/true, !o.chat && tok.add_bos());
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
  absl::StatusOr<RunnablePlan> runnable = load_plan(o);
  if (!runnable.ok()) return fail(runnable.status());
  const Plan& plan = runnable->plan();
  // The backend first: it checks the referenced weight files before anything else reads them.
  BackendOptions bo;
  bo.num_threads = o.threads;
  bo.native_weights = o.weights_dtype == "native";
  bo.quantize_activations = o.q8_activations;
  bo.verify_weights = o.verify_weights;
  bo.kv_pages = o.kv_pages;
  bo.kv_cache_gb = o.kv_cache_gb;
  bo.gpu_memory_fraction = o.gpu_memory_fraction;
  bo.debug_sync = o.debug_sync;
  bo.cuda_graphs = o.cuda_graphs;
  bo.persistent = persistent_mode(o.persistent);
  // --check downloads every KV cache a node reads, twice per node: a small pool keeps that cheap
  // (4096 tokens of pages at the usual page size of 16).
  if (o.check && bo.kv_pages == 0 && bo.kv_cache_gb == 0) bo.kv_pages = 256;
  if (o.check && plan.ranks > 1) {
    // --check runs one GPU's kernels node by node against the reference; a TP plan's nodes are
    // split over several GPUs and meet in collectives.
    return fail(absl::UnimplementedError(
        absl::StrCat("--check compares one GPU's kernels with the reference backend; this plan is "
                     "tensor-parallel over ",
                     plan.ranks, " ranks: check the plan compiled without --tp")));
  }
  absl::StatusOr<std::unique_ptr<Backend>> backend =
      open_backend(o.check ? "cuda" : o.device, plan, bo,
                   [&](int i) -> absl::StatusOr<std::string_view> { return runnable->blob(i); });
  if (!backend.ok()) {
    if (o.check) {
      return fail(absl::Status(backend.status().code(),
                               absl::StrCat("--check compares the GPU's kernels with the reference "
                                            "backend, so it needs a GPU: ",
                                            backend.status().message())));
    }
    return fail(backend.status());
  }
  if ((*backend)->name() != "cpu") std::cerr << "kiln run: " << (*backend)->load_report() << "\n";
  absl::StatusOr<Tokenizer> tok = load_tokenizer(plan.tokenizer_path);
  if (!tok.ok()) return fail(tok.status());
  absl::StatusOr<GenerationRequest> req = make_request(o, *tok, plan.model);
  if (!req.ok()) return fail(req.status());

  // --check: the reference's IR and weights (from --check-against's plan, else the run plan's),
  // and the GPU backend wrapped so its first steps run node by node against them.
  std::optional<LoadedPlan> reference_plan;
  std::unique_ptr<ReferenceBackend> reference;
  std::unique_ptr<CheckedBackend> checked;
  if (o.check) {
    BackendOptions ro;
    ro.kv_pages = 1;  // the reference runs single nodes on the GPU's caches, never its own pool
    ro.num_threads = o.threads;
    absl::StatusOr<std::unique_ptr<ReferenceBackend>> ref;
    if (!o.check_against.empty()) {
      PlanLoadOptions lo;
      lo.plan_path_for_messages = o.check_against;
      lo.weights = WeightCheck::kNone;
      absl::StatusOr<LoadedPlan> loaded = read_plan(o.check_against, lo);
      if (!loaded.ok()) return fail(loaded.status());
      reference_plan = std::move(*loaded);
      ref = ReferenceBackend::create(*reference_plan, ro);
    } else {
      ref = ReferenceBackend::create(
          plan, ro, [&](int i) -> absl::StatusOr<std::string_view> { return runnable->blob(i); });
    }
    if (!ref.ok()) return fail(ref.status());
    reference = std::move(*ref);
    absl::StatusOr<std::unique_ptr<CheckedBackend>> c = CheckedBackend::create(
        static_cast<CudaBackend&>(**backend), reference->graph(), reference->params(),
        o.check_steps);
    if (!c.ok()) return fail(c.status());
    checked = std::move(*c);
  }

  Engine engine(checked ? static_cast<Backend&>(*checked) : **backend, *tok,
                cascade_mode(o.cascade));
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
  if (checked) {
    std::fputs(format_checks(checked->checks()).c_str(), stdout);
    if (checked->first_divergence() != nullptr) return 3;  // scripts tell "wrong" from "failed"
  }
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
                  "a model compiled in memory: bf16 (fast), f32 (exact) or native (CPU: a GGUF's "
                  "quantized blocks as stored, the fewest bytes per token); a plan keeps its own")
      ->check(CLI::IsMember({"bf16", "f32", "native"}))
      ->capture_default_str();
  add_kv_dtype_option(cmd, &o->kv_dtype);
  cmd->add_flag("--q8-activations", o->q8_activations,
                "CPU, --weights-dtype native: activations rounded to 8 bits per 32 values for the "
                "quantized matmuls, as llama.cpp does (faster, not exact)");
  cmd->add_option("--threads", o->threads, "CPU threads (0 = all cores)")->capture_default_str();
  cmd->add_option("--kv-pages", o->kv_pages,
                  "KV cache pages (0 = every sequence at full context, up to 4 GiB)")
      ->capture_default_str();
  cmd->add_option("--max-context", o->max_context,
                  "a model compiled in memory: cap the context length (0 = the model's)")
      ->capture_default_str();
  cmd->add_flag("--verify-weights", o->verify_weights,
                "check every referenced weight file's checksum before running");
  cmd->add_option("--kv-cache-gb", o->kv_cache_gb,
                  "GPU: KV pool size in GiB (default: --gpu-memory-fraction of free memory)");
  cmd->add_option("--gpu-memory-fraction", o->gpu_memory_fraction,
                  "GPU: fraction of the free memory the KV pool takes")
      ->check(CLI::Range(0.01, 1.0))
      ->capture_default_str();
  cmd->add_flag("--debug-sync", o->debug_sync,
                "GPU: synchronize and check after every launch, naming the op that failed");
  cmd->add_flag("!--no-cuda-graphs", o->cuda_graphs, "GPU: run decode steps eagerly");
  add_persistent_option(*cmd, o->persistent);
  add_cascade_option(*cmd, o->cascade);
  cmd->add_flag("--check", o->check,
                "GPU: run the first steps node by node, compare every kernel's and GEMM's result "
                "with the reference backend's for the same op on the same inputs, print a table "
                "and name the first op that diverges (exit code 3 when one does)");
  cmd->add_option("--check-against", o->check_against,
                  "--check: a .kplan whose IR and weights the reference uses (e.g. the plan an "
                  "edited IR was compiled from); default the plan being run");
  cmd->add_option("--check-steps", o->check_steps,
                  "--check: how many steps to check (the prompt's prefill, then decode steps)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->callback([o, exit_code] { *exit_code = run(*o); });
}

}  // namespace kiln::tools
