// `kiln run`: generate text from a model, streamed as it is produced, on the CPU reference
// backend (the GPU runtime arrives with plans).
#include <cstdio>
#include <iostream>

#include "absl/strings/str_format.h"
#include "models/chat_template.h"
#include "runtime/cpu_model.h"
#include "runtime/generator.h"
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
};

int run(const RunOptions& o) {
  if (o.device == "cuda") {
    std::cerr << "kiln run: the CUDA runtime is not available yet; use --device cpu (or auto)\n";
    return 2;
  }
  if (o.device == "auto") std::cerr << "kiln run: using the CPU reference backend\n";
  CpuModelOptions mo;
  mo.weights_dtype = o.weights_dtype == "f32" ? DType::kF32 : DType::kBF16;
  mo.num_threads = o.threads;
  mo.limits.max_seqs = 1;
  mo.limits.max_context = o.max_context;
  absl::StatusOr<std::unique_ptr<CpuModel>> model = CpuModel::load(o.model, mo);
  if (!model.ok()) {
    std::cerr << "kiln run: " << model.status().message() << "\n";
    return 1;
  }
  const Tokenizer& tok = (*model)->tokenizer();
  std::string text = o.prompt;
  GenerationRequest req;
  if (o.chat) {
    absl::StatusOr<ChatTemplate> tmpl = ChatTemplate::for_tokenizer(tok);
    if (!tmpl.ok()) {
      std::cerr << "kiln run: --chat: " << tmpl.status().message() << "\n";
      return 1;
    }
    std::vector<ChatMessage> messages;
    if (!o.system.empty()) messages.push_back({"system", o.system});
    messages.push_back({"user", o.prompt});
    absl::StatusOr<std::string> rendered = tmpl->render(messages, /*add_generation_prompt=*/true);
    if (!rendered.ok()) {
      std::cerr << "kiln run: --chat: " << rendered.status().message() << "\n";
      return 1;
    }
    text = *std::move(rendered);
    req.stop_ids = tmpl->stop_ids(tok);
    for (int32_t id : (*model)->config().eos_ids) req.stop_ids.push_back(id);
  }
  // A chat template writes its own BOS (apply_chat_template's text is encoded without specials).
  req.prompt = tok.encode(text, /*parse_special=*/true, !o.chat && tok.add_bos());
  req.max_new_tokens = o.max_new_tokens;
  req.sampling = {o.temperature, o.top_k, o.top_p, o.seed};
  req.stop_strings = o.stop;
  Generator gen(**model, GeneratorOptions{o.kv_pages});
  GenerationStats stats;
  absl::StatusOr<std::vector<GenerationResult>> out = gen.generate(
      {req},
      [](size_t, const std::string& piece) {
        std::fwrite(piece.data(), 1, piece.size(), stdout);
        std::fflush(stdout);
      },
      &stats);
  std::fputc('\n', stdout);
  if (!out.ok()) {
    std::cerr << "kiln run: " << out.status().message() << "\n";
    return 1;
  }
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
  CLI::App* cmd = app.add_subcommand("run", "Generate text from a model (HF dir or .gguf)");
  cmd->add_option("model", o->model, "model directory or .gguf file")->required();
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
  cmd->add_option("--weights-dtype", o->weights_dtype, "CPU weights: bf16 (fast) or f32 (exact)")
      ->check(CLI::IsMember({"bf16", "f32"}))
      ->capture_default_str();
  cmd->add_option("--threads", o->threads, "CPU threads (0 = all cores)")->capture_default_str();
  cmd->add_option("--kv-pages", o->kv_pages, "KV cache pages (0 = enough for the request)")
      ->capture_default_str();
  cmd->add_option("--max-context", o->max_context, "cap the context length (0 = the model's)")
      ->capture_default_str();
  cmd->callback([o, exit_code] { *exit_code = run(*o); });
}

}  // namespace kiln::tools
