// `kiln bench x.kplan --batch B --prompt-len P --gen-len G`: end-to-end prefill and decode on the
// CUDA backend, printed as one JSON line shaped like ../shared/peers/torch_peers.py's `e2e_decode`
// (bench, peer, batch, prompt, gen, ms_per_step, tok_s, ...) so one script can join kiln and the
// peers. The floor is the bytes a decode step must move (weights + the KV it reads) over the copy
// bandwidth measured in the same run. `--device cpu` runs the same steps on the reference backend
// (a .kplan, or a model compiled in memory as `kiln run` does), with host memcpy bandwidth as the
// floor's denominator.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <random>
#include <variant>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "codegen/compile_model.h"
#include "nlohmann/json.hpp"
#include "plan/plan_file.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/kv/page_tables.h"
#include "runtime/kv/step_metadata.h"
#include "runtime/reference/matmul.h"
#include "runtime/reference/reference_backend.h"
#include "tools/commands.h"
#include "tools/kv_dtype_flag.h"
#include "tools/run_backend.h"

namespace kiln::tools {
namespace {

struct BenchOptions {
  std::string plan;
  std::string device = "cuda";
  int threads = 0;                       // cpu: 0 = all cores
  std::string weights_dtype = "bf16";    // cpu, a model compiled in memory: bf16, f32 or native
  bool q8_activations = false;           // cpu, native: llama.cpp-style 8-bit activations
  std::string kv_dtype = "auto";         // cpu, a model compiled in memory: the KV cache's dtype
  int batch = 1;
  int prompt_len = 128;
  int gen_len = 64;
  double kv_cache_gb = 0;
  double gpu_memory_fraction = 0.9;
  bool cuda_graphs = true;
  std::string persistent = "auto";
  std::string cascade = "off";  // auto|off; see add_cascade_option for why off by default
  int shared_prefix = 0;  // prompt tokens every sequence shares (forked pages); 0 = none
};

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int fail(const absl::Status& s) {
  std::cerr << "kiln bench: " << s.message() << "\n";
  return 1;
}

/// Device-to-device copy bandwidth (bytes read + written per second) over a 1 GiB buffer, the
/// median of 10 copies after a warm-up.
absl::StatusOr<double> copy_bandwidth(GpuDevice& dev) {
  const size_t bytes = size_t{1} << 30;
  absl::StatusOr<DeviceBuffer> a = dev.alloc(bytes), b = dev.alloc(bytes);
  if (!a.ok()) return a.status();
  if (!b.ok()) return b.status();
  if (absl::Status s = dev.fill_bytes(a->ptr(), 0x3c, bytes); !s.ok()) return s;
  std::vector<float> ms;
  for (int i = 0; i < 12; ++i) {
    absl::StatusOr<float> t =
        dev.time_ms([&] { return dev.copy_async(b->ptr(), a->ptr(), bytes); });
    if (!t.ok()) return t.status();
    if (i >= 2) ms.push_back(*t);
  }
  std::sort(ms.begin(), ms.end());
  return 2.0 * bytes / (ms[ms.size() / 2] * 1e-3);
}

/// Host memcpy bandwidth (bytes read + written per second) over 256 MiB, the median of 7 copies
/// after a warm-up: the CPU floor's denominator.
double host_copy_bandwidth() {
  const size_t bytes = size_t{256} << 20;
  std::vector<char> a(bytes, 0x3c), b(bytes, 0);
  std::vector<double> s;
  for (int i = 0; i < 8; ++i) {
    const double t0 = now_s();
    std::memcpy(b.data(), a.data(), bytes);
    if (i >= 1) s.push_back(now_s() - t0);
  }
  std::sort(s.begin(), s.end());
  return 2.0 * bytes / s[s.size() / 2];
}

/// "AMD EPYC ... (avx512)": /proc/cpuinfo's model name and the matmul ISA in use.
std::string cpu_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line, name = "cpu";
  while (std::getline(in, line)) {
    if (absl::StartsWith(line, "model name")) {
      name = line.substr(line.find(':') + 2);
      break;
    }
  }
  return absl::StrCat(name, " (", matmul_isa_name(MatmulIsa::kAuto), ")");
}

/// The plan for `--device cpu`: a .kplan as written, or the model compiled in memory with no
/// kernels, sized for the benchmark (kiln run's in-memory plan).
absl::StatusOr<std::variant<LoadedPlan, CompiledPlan>> cpu_plan(const BenchOptions& o) {
  std::ifstream in(o.plan, std::ios::binary);
  char magic[sizeof(kPlanMagic)] = {};
  if (in.read(magic, sizeof(magic)) && std::memcmp(magic, kPlanMagic, sizeof(magic)) == 0) {
    absl::StatusOr<LoadedPlan> loaded = read_plan(o.plan);
    if (!loaded.ok()) return loaded.status();
    return std::variant<LoadedPlan, CompiledPlan>(std::move(*loaded));
  }
  CompileOptions co;
  co.model = o.plan;
  co.build_kernels = false;
  co.limits.max_seqs = o.batch;
  co.limits.max_context = o.prompt_len + o.gen_len + 1;
  co.limits.dtype = o.weights_dtype == "f32" || (o.weights_dtype == "native" &&
                                                 absl::EndsWith(o.plan, ".gguf"))
                        ? DType::kF32
                        : DType::kBF16;
  co.limits.kv_dtype = kv_dtype_of(o.kv_dtype);
  absl::StatusOr<CompiledPlan> built = build_plan(co);
  if (!built.ok()) return built.status();
  return std::variant<LoadedPlan, CompiledPlan>(std::move(*built));
}

int run_bench(const BenchOptions& o) {
  std::variant<LoadedPlan, CompiledPlan> source;
  if (o.device == "cpu") {
    absl::StatusOr<std::variant<LoadedPlan, CompiledPlan>> built = cpu_plan(o);
    if (!built.ok()) return fail(built.status());
    source = std::move(*built);
  } else {
    absl::StatusOr<LoadedPlan> loaded = read_plan(o.plan);
    if (!loaded.ok()) return fail(loaded.status());
    source = std::move(*loaded);
  }
  const Plan& p = std::visit([](const auto& s) -> const Plan& { return s.plan; }, source);
  const PlanBlobReader blobs = [&](int i) -> absl::StatusOr<std::string_view> {
    return std::visit([i](const auto& s) { return s.blob(i); }, source);
  };
  BackendOptions bo;
  bo.kv_cache_gb = o.kv_cache_gb;
  bo.gpu_memory_fraction = o.gpu_memory_fraction;
  bo.cuda_graphs = o.cuda_graphs;
  bo.persistent = persistent_mode(o.persistent);
  bo.num_threads = o.threads;
  bo.native_weights = o.weights_dtype == "native";
  bo.quantize_activations = o.q8_activations;
  const double t_load = now_s();
  std::unique_ptr<Backend> backend;
  CudaBackend* gpu = nullptr;
  ReferenceBackend* cpu = nullptr;
  if (o.device == "cpu") {
    absl::StatusOr<std::unique_ptr<ReferenceBackend>> r = ReferenceBackend::create(p, bo, blobs);
    if (!r.ok()) return fail(r.status());
    cpu = r->get();
    backend = std::move(*r);
  } else {
    absl::StatusOr<std::unique_ptr<CudaBackend>> c = CudaBackend::create(p, bo, blobs);
    if (!c.ok()) return fail(c.status());
    gpu = c->get();
    backend = std::move(*c);
  }
  const double load_s = now_s() - t_load;
  Backend& b = *backend;
  std::cerr << b.load_report() << "\n";
  if (o.batch > p.limits.max_seqs) {
    return fail(absl::InvalidArgumentError(
        absl::StrCat("--batch ", o.batch, " exceeds the plan's max_seqs of ", p.limits.max_seqs)));
  }
  absl::StatusOr<KvPageTables> tables =
      KvPageTables::create({p.kv.page_size, static_cast<int32_t>(b.kv_pages())});
  if (!tables.ok()) return fail(tables.status());
  std::mt19937 rng(0);
  std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(p.model.vocab_size) - 1);
  std::vector<SeqId> seqs(o.batch);
  std::vector<std::vector<int32_t>> prompts(o.batch);
  if (o.shared_prefix >= o.prompt_len) {
    return fail(absl::InvalidArgumentError(absl::StrCat(
        "--shared-prefix ", o.shared_prefix, " must be below --prompt-len ", o.prompt_len)));
  }
  for (int i = 0; i < o.batch; ++i) {
    seqs[i] = tables->add_sequence();
    for (int t = 0; t < o.prompt_len; ++t) {
      prompts[i].push_back(i > 0 && t < o.shared_prefix ? prompts[0][t] : tok(rng));
    }
  }
  const CascadeMode cascade = cascade_mode(o.cascade);
  bool cascade_steps = false;  // some decode step carried a cascade layout
  auto step = [&](const std::vector<StepSequence>& batch,
                  const std::vector<int32_t>& tokens) -> absl::StatusOr<StepResult> {
    absl::StatusOr<StepMetadata> meta = build_step_metadata(*tables, batch);
    if (!meta.ok()) return meta.status();
    // A forked sequence's first write into its parent's partly filled last page copies it first.
    if (absl::Status s = b.copy_kv_pages(tables->take_pending_copies()); !s.ok()) return s;
    StepRequest req;
    req.inputs.tokens = tokens;
    req.inputs.cascade = step_cascade(*meta, p.kv.page_size, cascade);
    cascade_steps = cascade_steps || req.inputs.cascade.has_value();
    req.inputs.metadata = std::move(*meta);
    req.sampling.assign(batch.size(), SequenceSampling{});
    return b.run_step(req);
  };

  // Prefill: whole prompts packed into steps of at most max_tokens tokens / max_seqs sequences;
  // a prompt longer than one step is prefilled in chunks of max_tokens (chunked prefill), and its
  // first token comes from the last chunk.
  std::vector<int32_t> next(o.batch);
  const double t_prefill = now_s();
  double ttft_s = 0;
  const int64_t chunk = p.limits.max_tokens;
  // With --shared-prefix every sequence after the first is a fork of the first, cut back to the
  // shared tokens, as the prefix cache hands requests on one prompt the same pages; each then
  // prefills its own rest (one sequence per step, in chunks).
  const bool forked = o.shared_prefix > 0;
  for (int i = 0; (forked || o.prompt_len > chunk) && i < o.batch; ++i) {
    int64_t first = 0;
    if (forked && i > 0) {
      if (absl::Status s = tables->free(seqs[i]); !s.ok()) return fail(s);
      absl::StatusOr<SeqId> child = tables->fork(seqs[0]);
      if (!child.ok()) return fail(child.status());
      seqs[i] = *child;
      if (absl::Status s = tables->truncate(seqs[i], o.shared_prefix); !s.ok()) return fail(s);
      first = o.shared_prefix;
    }
    for (int64_t start = first; start < o.prompt_len; start += chunk) {
      const int64_t n = std::min<int64_t>(chunk, o.prompt_len - start);
      std::vector<int32_t> tokens(prompts[i].begin() + start, prompts[i].begin() + start + n);
      absl::StatusOr<StepResult> r = step({{seqs[i], static_cast<int32_t>(n)}}, tokens);
      if (!r.ok()) return fail(r.status());
      next[i] = r->tokens[0];
    }
    if (ttft_s == 0) ttft_s = now_s() - t_prefill;
  }
  for (int i = forked || o.prompt_len > chunk ? o.batch : 0; i < o.batch;) {
    std::vector<StepSequence> batch;
    std::vector<int32_t> tokens;
    std::vector<int> members;
    while (i < o.batch && static_cast<int64_t>(batch.size()) < p.limits.max_seqs &&
           (batch.empty() ||
            static_cast<int64_t>(tokens.size()) + o.prompt_len <= p.limits.max_tokens)) {
      batch.push_back({seqs[i], o.prompt_len});
      tokens.insert(tokens.end(), prompts[i].begin(), prompts[i].end());
      members.push_back(i++);
    }
    absl::StatusOr<StepResult> r = step(batch, tokens);
    if (!r.ok()) return fail(r.status());
    for (size_t k = 0; k < members.size(); ++k) next[members[k]] = r->tokens[k];
    if (ttft_s == 0) ttft_s = now_s() - t_prefill;
  }
  const double prefill_s = now_s() - t_prefill;

  // Decode: every sequence one token per step; the first steps (graph capture) are warm-up.
  const int warm = std::min(3, std::max(0, o.gen_len - 1));
  std::vector<double> times;
  int launches = 0;
  bool persistent = false;
  for (int g = 0; g < o.gen_len; ++g) {
    std::vector<StepSequence> batch;
    for (int i = 0; i < o.batch; ++i) batch.push_back({seqs[i], 1});
    const double t0 = now_s();
    absl::StatusOr<StepResult> r = step(batch, next);
    if (!r.ok()) return fail(r.status());
    const double dt = now_s() - t0;
    next = r->tokens;
    if (g >= warm) times.push_back(dt);
    if (gpu != nullptr) {
      launches = gpu->last_step().launches;
      persistent = gpu->last_step().persistent;
    }
  }
  if (times.empty()) return fail(absl::InvalidArgumentError("--gen-len must be at least 1"));
  std::sort(times.begin(), times.end());
  const double step_s = times[times.size() / 2];
  // Bytes a decode step must move: every weight once, and each sequence's KV at its mean length.
  const double mean_ctx = o.prompt_len + o.gen_len / 2.0;
  const double kv_per_token = gpu != nullptr ? static_cast<double>(gpu->kv_bytes_per_token())
                                             : 2.0 * p.kv.num_layers * p.kv.num_kv_heads *
                                                   p.kv.head_dim * sizeof(float);
  const double kv_bytes = static_cast<double>(o.batch) * mean_ctx * kv_per_token;
  const int64_t weight_bytes = gpu != nullptr ? gpu->weight_bytes() : cpu->weight_bytes();
  const double bytes = static_cast<double>(weight_bytes) + kv_bytes;
  nlohmann::json j = {{"bench", "e2e_decode"},
                      {"peer", "kiln"},
                      {"backend", b.name()},
                      {"batch", o.batch},
                      {"prompt", o.prompt_len},
                      {"gen", o.gen_len},
                      {"kv_dtype", dtype_name(p.kv.dtype)},
                      {"shared_prefix", o.shared_prefix},
                      {"cascade", cascade_steps},  // decode steps ran cascade attention
                      {"load_s", std::round(load_s * 100) / 100},
                      {"ttft_ms", std::round(ttft_s * 1e5) / 100},
                      {"prefill_ms", std::round(prefill_s * 1e5) / 100},
                      {"prefill_tok_s", std::round(o.batch * o.prompt_len / prefill_s)},
                      {"ms_per_step", std::round(step_s * 1e6) / 1000},
                      {"tok_s", std::round(o.batch / step_s * 10) / 10},
                      {"step_bytes", bytes},
                      {"weight_bytes", weight_bytes},
                      {"TBps", std::round(bytes / step_s / 1e9) / 1000}};
  absl::StatusOr<double> copy = absl::UnavailableError("not measured");
  if (gpu != nullptr) {
    j["launches_per_step"] = launches;
    j["cuda_graphs"] = o.cuda_graphs;
    j["persistent"] = persistent;  // the decode steps ran the persistent decode kernel
    j["device"] = gpu->device().name();
    copy = copy_bandwidth(gpu->device());
  } else {
    j["threads"] = o.threads;
    j["weights_dtype"] = o.weights_dtype;
    j["q8_activations"] = o.q8_activations;
    j["device"] = cpu_name();
    copy = host_copy_bandwidth();
  }
  if (copy.ok()) {
    j["copy_TBps"] = std::round(*copy / 1e9) / 1000;
    j["floor_ms"] = std::round(bytes / *copy * 1e6) / 1000;
    j["floor_fraction"] = std::round(bytes / *copy / step_s * 1000) / 1000;
  }
  std::cout << j.dump() << std::endl;
  return 0;
}

}  // namespace

void add_bench_command(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<BenchOptions>();
  CLI::App* cmd =
      app.add_subcommand("bench", "End-to-end prefill and decode timing on the GPU or the CPU");
  cmd->add_option("plan", o->plan, "plan file (.kplan); with --device cpu also a model")
      ->required();
  cmd->add_option("--device", o->device, "cuda, or cpu (the reference backend)")
      ->check(CLI::IsMember({"cuda", "cpu"}))
      ->capture_default_str();
  cmd->add_option("--threads", o->threads, "cpu: threads (0 = all cores)")->capture_default_str();
  add_kv_dtype_option(cmd, &o->kv_dtype);
  cmd->add_option("--weights-dtype", o->weights_dtype,
                  "cpu, a model compiled in memory: bf16, f32 or native (a GGUF's blocks as stored)")
      ->check(CLI::IsMember({"bf16", "f32", "native"}))
      ->capture_default_str();
  cmd->add_flag("--q8-activations", o->q8_activations,
                "cpu, native: 8-bit activations for the quantized matmuls (as llama.cpp)");
  cmd->add_option("--batch", o->batch, "sequences decoded together")->check(CLI::PositiveNumber);
  cmd->add_option("--prompt-len", o->prompt_len, "prompt tokens per sequence")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--gen-len", o->gen_len, "decode steps")->check(CLI::PositiveNumber);
  cmd->add_option("--kv-cache-gb", o->kv_cache_gb,
                  "KV pool size in GiB (default: a fraction "
                  "of free memory)");
  cmd->add_option("--gpu-memory-fraction", o->gpu_memory_fraction,
                  "fraction of free GPU memory for the KV pool")
      ->check(CLI::Range(0.01, 1.0));
  cmd->add_flag("!--no-cuda-graphs", o->cuda_graphs, "run decode steps eagerly");
  add_persistent_option(*cmd, o->persistent);
  add_cascade_option(*cmd, o->cascade);
  cmd->add_option("--shared-prefix", o->shared_prefix,
                  "prompt tokens all sequences share (forked KV pages, as the prefix cache "
                  "shares a prompt's), below --prompt-len; 0 = every prompt its own")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->callback([o, exit_code] { *exit_code = run_bench(*o); });
}

}  // namespace kiln::tools
