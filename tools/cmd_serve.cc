// `kiln serve`: an OpenAI-compatible HTTP server over the scheduler and the CPU reference
// backend or the GPU (tools/run_backend.h), through the same Backend interface.
#include <signal.h>

#include <filesystem>
#include <iostream>
#include <thread>

#include "absl/strings/str_format.h"
#include "codegen/compile_model.h"
#include "models/chat_template.h"
#include "models/tokenizer_source.h"
#include "plan/plan_file.h"
#include "runtime/cuda/driver.h"
#include "runtime/scheduler/step_execution.h"
#include "server/engine_loop.h"
#include "server/http_server.h"
#include "tools/commands.h"
#include "tools/kv_dtype_flag.h"
#include "tools/run_backend.h"

namespace kiln::tools {
namespace {

struct ServeOptions {
  std::string model;
  std::string host = "127.0.0.1";
  int port = 8000;
  std::string served_name;
  int64_t kv_pages = 0;
  double kv_cache_mb = 256;
  double kv_cache_gb = 0;  // when > 0, instead of kv_cache_mb (the GPU's unit)
  int max_running = 16;
  int max_step_tokens = 256;
  int64_t max_context = 2048;
  std::string kv_dtype = "auto";  // a model compiled at start: the KV cache's dtype
  int64_t max_queue = 256;
  bool no_prefix_cache = false;
  std::string persistent = "auto";
  std::string cascade = "off";  // auto|off; see add_cascade_option for why off by default
  int threads = 0;
  std::string device = "auto";  // auto | cuda | cpu (tools/run_backend.h)
  size_t max_body_bytes = 1 << 20;
  int read_timeout = 10;
};

// The plan to serve: a .kplan file, or the model compiled in memory (kernels only for a GPU; the
// reference backend interprets the plan's IR). `blobs` reads the plan's packed data.
struct ServedPlan {
  Plan plan;
  std::optional<LoadedPlan> file;
  std::optional<CompiledPlan> compiled;
  std::string_view blob(int index) const {
    return file ? file->blob(index) : compiled->blob(index);
  }
};

absl::StatusOr<ServedPlan> load_served_plan(const ServeOptions& o) {
  ServedPlan sp;
  if (std::filesystem::path(o.model).extension() == ".kplan") {
    PlanLoadOptions lo;
    lo.plan_path_for_messages = o.model;
    absl::StatusOr<LoadedPlan> file = read_plan(o.model, lo);
    if (!file.ok()) return file.status();
    sp.plan = file->plan;
    sp.file = std::move(*file);
    return sp;
  }
  CompileOptions co;
  co.model = o.model;
  co.build_kernels = false;
  co.limits.max_seqs = o.max_running;
  co.limits.max_tokens = o.max_step_tokens;
  co.limits.max_context = o.max_context;
  co.limits.dtype = DType::kBF16;
  co.limits.kv_dtype = kv_dtype_of(o.kv_dtype);
  // For the GPU, the kernels too (NVRTC through the kernel cache), for this GPU's arch.
  if (o.device != "cpu") {
    absl::StatusOr<GpuDevice> gpu = open_gpu();
    if (gpu.ok()) {
      co.arch = gpu->arch();
      co.build_kernels = true;
    } else if (o.device == "cuda") {
      return absl::UnavailableError(absl::StrCat("no GPU found: ", gpu.status().message()));
    }
  }
  absl::StatusOr<CompiledPlan> compiled = build_plan(co);
  if (!compiled.ok()) return compiled.status();
  sp.plan = compiled->plan;
  sp.compiled = std::move(*compiled);
  return sp;
}

int fail(const absl::Status& s) {
  std::cerr << "kiln serve: " << s.message() << "\n";
  return 1;
}

int serve(const ServeOptions& o) {
  // SIGTERM/SIGINT are taken by a waiting thread (sigwait), never by an async handler: block them
  // before any thread starts so that every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);  // a client that hung up must not kill the server

  absl::StatusOr<ServedPlan> sp = load_served_plan(o);
  if (!sp.ok()) return fail(sp.status());
  const Plan& plan = sp->plan;
  const ModelConfig& c = plan.model;
  const StepLimits& lim = plan.limits;
  int64_t context = lim.max_context > 0 ? std::min(lim.max_context, c.max_context) : c.max_context;
  if (o.max_context > 0) context = std::min(context, o.max_context);
  const int64_t page = plan.kv.page_size;
  BackendOptions bo;
  bo.num_threads = o.threads;
  bo.kv_pages = o.kv_pages;
  bo.kv_cache_gb = o.kv_cache_gb > 0 ? o.kv_cache_gb : o.kv_cache_mb / 1024.0;
  bo.persistent = persistent_mode(o.persistent);
  const ServedPlan& served = *sp;
  absl::StatusOr<std::unique_ptr<Backend>> backend = tools::open_backend(
      o.device, plan, bo,
      [&served](int i) -> absl::StatusOr<std::string_view> { return served.blob(i); });
  if (!backend.ok()) return fail(backend.status());
  absl::StatusOr<KvPageTables> kv = page_tables_for(**backend);
  if (!kv.ok()) return fail(kv.status());
  const int64_t pages = (*backend)->kv_pages();
  absl::StatusOr<Tokenizer> tokenizer = load_tokenizer(plan.tokenizer_path);
  if (!tokenizer.ok()) return fail(tokenizer.status());
  const Tokenizer& tok = *tokenizer;
  std::optional<ChatTemplate> chat;
  if (absl::StatusOr<ChatTemplate> t = ChatTemplate::for_tokenizer(tok); t.ok()) chat = *t;
  std::vector<int32_t> stop_ids = c.eos_ids;
  for (int32_t t : tok.stop_ids()) stop_ids.push_back(t);
  // The step graph's bounds cap the batch (a .kplan fixes them at compile time).
  const int max_running = static_cast<int>(std::min<int64_t>(o.max_running, lim.max_seqs));
  const int max_step_tokens =
      static_cast<int>(std::min<int64_t>(o.max_step_tokens, lim.max_tokens));

  EngineOptions eo;
  eo.scheduler = {
      .max_running = max_running, .max_step_tokens = max_step_tokens, .max_context = context};
  eo.prefix_cache = !o.no_prefix_cache;
  eo.cascade = cascade_mode(o.cascade);
  eo.max_queue = o.max_queue;
  EngineLoop engine(eo, *kv, **backend, tok);

  HttpServerOptions ho;
  ho.host = o.host;
  ho.port = o.port;
  ho.model_name =
      !o.served_name.empty() ? o.served_name : std::filesystem::path(o.model).stem().string();
  ho.max_context = context;
  ho.max_body_bytes = o.max_body_bytes;
  ho.read_timeout_seconds = o.read_timeout;
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
      "kiln serve: %s as \"%s\" on http://%s:%d (%s backend; %d KV pages of %d "
      "tokens, context %d, up to %d running, %d tokens a step, prefix cache %s)\n",
      o.model, ho.model_name, o.host, http.port(), (*backend)->name(), pages, page, context,
      max_running, max_step_tokens, eo.prefix_cache ? "on" : "off");
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
  cmd->add_option("model", o->model, "plan file (.kplan), model directory or .gguf file")
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
  cmd->add_option("--kv-cache-gb", o->kv_cache_gb,
                  "KV cache memory in GiB, instead of --kv-cache-mb (as kiln run / bench take it)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--max-running", o->max_running, "sequences batched in one step")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--max-step-tokens", o->max_step_tokens, "token budget of one step")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  add_kv_dtype_option(cmd, &o->kv_dtype);
  cmd->add_option("--max-context", o->max_context, "cap the context length (0 = the model's)")
      ->capture_default_str();
  cmd->add_option("--max-queue", o->max_queue, "waiting requests before 429")
      ->capture_default_str();
  cmd->add_flag("--no-prefix-cache", o->no_prefix_cache, "disable prefix caching");
  add_persistent_option(*cmd, o->persistent);
  add_cascade_option(*cmd, o->cascade);
  cmd->add_option("--threads", o->threads, "CPU threads (0 = all cores)")->capture_default_str();
  cmd->add_option("--device", o->device, "auto (the GPU when present), cuda or cpu")
      ->check(CLI::IsMember({"auto", "cuda", "cpu"}))
      ->capture_default_str();
  cmd->add_option("--max-body-bytes", o->max_body_bytes, "largest request body accepted")
      ->capture_default_str();
  cmd->add_option("--read-timeout", o->read_timeout,
                  "seconds a client may take to send its request")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->callback([o, exit_code] { *exit_code = serve(*o); });
}

}  // namespace kiln::tools
