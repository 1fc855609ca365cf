// `kiln serve`: an OpenAI-compatible HTTP server over the scheduler and the CPU reference
// backend (the GPU executor plugs in through the same step runner when it lands).
#include <signal.h>

#include <filesystem>
#include <iostream>
#include <thread>

#include "absl/strings/str_format.h"
#include "models/chat_template.h"
#include "runtime/cpu_model.h"
#include "runtime/scheduler/cpu_step_runner.h"
#include "server/engine_loop.h"
#include "server/http_server.h"
#include "tools/commands.h"

namespace kiln::tools {
namespace {

struct ServeOptions {
  std::string model;
  std::string host = "127.0.0.1";
  int port = 8000;
  std::string served_name;
  int64_t kv_pages = 0;
  double kv_cache_mb = 256;
  int max_running = 16;
  int max_step_tokens = 256;
  int64_t max_context = 2048;
  int64_t max_queue = 256;
  bool no_prefix_cache = false;
  int threads = 0;
  std::string weights_dtype = "bf16";
  size_t max_body_bytes = 1 << 20;
};

int serve(const ServeOptions& o) {
  if (std::filesystem::path(o.model).extension() == ".kplan") {
    std::cerr << "kiln serve: serving a .kplan needs the plan loader of the GPU runtime, which "
                 "has not landed yet; give the model (HF directory or .gguf) it was compiled "
                 "from\n";
    return 2;
  }
  // SIGTERM/SIGINT are taken by a waiting thread (sigwait), never by an async handler: block them
  // before any thread starts so that every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);  // a client that hung up must not kill the server

  CpuModelOptions mo;
  mo.weights_dtype = o.weights_dtype == "f32" ? DType::kF32 : DType::kBF16;
  mo.num_threads = o.threads;
  mo.limits.max_seqs = o.max_running;
  mo.limits.max_tokens = o.max_step_tokens;
  mo.limits.max_context = o.max_context;
  absl::StatusOr<std::unique_ptr<CpuModel>> model = CpuModel::load(o.model, mo);
  if (!model.ok()) {
    std::cerr << "kiln serve: " << model.status().message() << "\n";
    return 1;
  }
  const ModelConfig& c = (*model)->config();
  const int64_t context =
      o.max_context > 0 ? std::min<int64_t>(o.max_context, c.max_context) : c.max_context;
  const int64_t page = (*model)->limits().page_size;
  // The reference backend keeps K/V in f32 host memory.
  const int64_t pages =
      o.kv_pages > 0 ? o.kv_pages
                     : pages_for_budget(
                           static_cast<int64_t>(o.kv_cache_mb * (1 << 20)),
                           static_cast<int32_t>(c.num_layers), static_cast<int32_t>(c.num_kv_heads),
                           static_cast<int32_t>(c.head_dim), static_cast<int32_t>(page), 4);
  absl::StatusOr<PagedKvCache> kv = make_cpu_kv_cache(**model, pages);
  if (!kv.ok()) {
    std::cerr << "kiln serve: " << kv.status().message() << "\n";
    return 1;
  }
  CpuStepRunner runner(**model, *kv);
  const Tokenizer& tok = (*model)->tokenizer();
  std::optional<ChatTemplate> chat;
  if (absl::StatusOr<ChatTemplate> t = ChatTemplate::for_tokenizer(tok); t.ok()) chat = *t;
  std::vector<int32_t> stop_ids = c.eos_ids;
  for (int32_t t : tok.stop_ids()) stop_ids.push_back(t);

  EngineOptions eo;
  eo.scheduler = {
      .max_running = o.max_running, .max_step_tokens = o.max_step_tokens, .max_context = context};
  eo.prefix_cache = !o.no_prefix_cache;
  eo.max_queue = o.max_queue;
  EngineLoop engine(eo, *kv, runner, tok);

  HttpServerOptions ho;
  ho.host = o.host;
  ho.port = o.port;
  ho.model_name =
      !o.served_name.empty() ? o.served_name : std::filesystem::path(o.model).stem().string();
  ho.max_context = context;
  ho.max_body_bytes = o.max_body_bytes;
  HttpServer http(ho, engine, tok, chat, stop_ids);
  std::string error;
  if (!http.bind(error)) {
    std::cerr << "kiln serve: " << error << "\n";
    return 1;
  }
  std::thread signal_waiter([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    std::cerr << "kiln serve: signal " << sig << ": draining in-flight requests\n";
    engine.drain();  // refuses new requests, returns when the accepted ones finished
    http.stop();
  });
  std::cerr << absl::StrFormat(
      "kiln serve: %s as \"%s\" on http://%s:%d (CPU reference backend; %d KV pages of %d "
      "tokens, context %d, up to %d running, %d tokens a step, prefix cache %s)\n",
      o.model, ho.model_name, o.host, http.port(), pages, page, context, o.max_running,
      o.max_step_tokens, eo.prefix_cache ? "on" : "off");
  http.serve();
  // serve() also returns if listening fails; make the waiter exit in that case too.
  pthread_kill(signal_waiter.native_handle(), SIGTERM);
  signal_waiter.join();
  std::cerr << "kiln serve: stopped\n";
  return 0;
}

}  // namespace

void add_serve_command(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<ServeOptions>();
  CLI::App* cmd = app.add_subcommand("serve", "Serve a model over an OpenAI-compatible HTTP API");
  cmd->add_option("model", o->model, "model directory or .gguf file (.kplan: with the GPU runtime)")
      ->required();
  cmd->add_option("--host", o->host, "address to bind (loopback by default)")
      ->capture_default_str();
  cmd->add_option("--port", o->port, "TCP port (0 = any free one)")->capture_default_str();
  cmd->add_option("--served-model-name", o->served_name,
                  "model name in the API (default: the file name)");
  cmd->add_option("--kv-pages", o->kv_pages, "KV cache pages (0 = what --kv-cache-mb holds)")
      ->capture_default_str();
  cmd->add_option("--kv-cache-mb", o->kv_cache_mb, "KV cache memory when --kv-pages is 0")
      ->capture_default_str();
  cmd->add_option("--max-running", o->max_running, "sequences batched in one step")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--max-step-tokens", o->max_step_tokens, "token budget of one step")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--max-context", o->max_context, "cap the context length (0 = the model's)")
      ->capture_default_str();
  cmd->add_option("--max-queue", o->max_queue, "waiting requests before 429")
      ->capture_default_str();
  cmd->add_flag("--no-prefix-cache", o->no_prefix_cache, "disable prefix caching");
  cmd->add_option("--threads", o->threads, "CPU threads (0 = all cores)")->capture_default_str();
  cmd->add_option("--weights-dtype", o->weights_dtype, "CPU weights: bf16 (fast) or f32 (exact)")
      ->check(CLI::IsMember({"bf16", "f32"}))
      ->capture_default_str();
  cmd->add_option("--max-body-bytes", o->max_body_bytes, "largest request body accepted")
      ->capture_default_str();
  cmd->callback([o, exit_code] { *exit_code = serve(*o); });
}

}  // namespace kiln::tools
