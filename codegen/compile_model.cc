// The `kiln compile` pipeline (see compile_model.h).
#include "codegen/compile_model.h"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "codegen/kernel_source.h"
#include "codegen/lowering.h"
#include "codegen/plan_file.h"
#include "ir/parser.h"
#include "ir/printer.h"
#include "ir/verifier.h"
#include "models/model_source.h"
#include "models/weights.h"
#include "passes/pass_manager.h"
#include "xxhash.h"

namespace kiln {
namespace {

nlohmann::json config_json(const ModelConfig& c) {
  nlohmann::json j = {{"architecture", c.architecture},
                      {"source_architecture", c.source_architecture},
                      {"hidden_size", c.hidden_size},
                      {"num_layers", c.num_layers},
                      {"num_heads", c.num_heads},
                      {"num_kv_heads", c.num_kv_heads},
                      {"head_dim", c.head_dim},
                      {"intermediate_size", c.intermediate_size},
                      {"vocab_size", c.vocab_size},
                      {"max_context", c.max_context},
                      {"rms_eps", c.rms_eps},
                      {"rope_theta", c.rope_theta},
                      {"rope_interleaved", c.rope_interleaved},
                      {"tie_embeddings", c.tie_embeddings},
                      {"attention_bias", c.attention_bias},
                      {"bos_id", c.bos_id},
                      {"eos_ids", c.eos_ids},
                      {"weights_dtype", dtype_name(c.weights_dtype)},
                      {"summary", c.summary()}};
  if (c.rope_scaling) {
    j["rope_scaling"] = {{"type", "llama3"},
                         {"factor", c.rope_scaling->factor},
                         {"low_freq_factor", c.rope_scaling->low_freq_factor},
                         {"high_freq_factor", c.rope_scaling->high_freq_factor},
                         {"original_max_positions", c.rope_scaling->original_max_positions}};
  }
  return j;
}

nlohmann::json launch_json(const LaunchRule& r) {
  return {{"grid", r.grid}, {"block", r.block}, {"when", r.when}};
}

absl::Status dump(const std::string& dir, const std::string& file, const std::string& text) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  std::ofstream out(dir + "/" + file);
  out << text;
  if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write ", dir, "/", file));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Graph>> load_graph(const CompileOptions& o, const ModelConfig& c) {
  if (!o.from_ir.empty()) {
    std::ifstream in(o.from_ir, std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", o.from_ir));
    std::stringstream ss;
    ss << in.rdbuf();
    absl::StatusOr<std::unique_ptr<Graph>> g = parse_graph(ss.str());
    if (!g.ok())
      return absl::InvalidArgumentError(absl::StrCat(o.from_ir, ":", g.status().message()));
    return g;
  }
  auto g = std::make_unique<Graph>();
  if (absl::Status s = build_llama(c, o.limits, *g); !s.ok()) return s;
  return g;
}

KvPlan kv_plan_for(const ModelConfig& c, const StepLimits& l) {
  KvPlan kv;
  kv.page_size = l.page_size;
  kv.dtype = l.dtype;
  kv.num_layers = c.num_layers;
  kv.num_kv_heads = c.num_kv_heads;
  kv.head_dim = c.head_dim;
  const int64_t elem = block_bytes(l.dtype);
  kv.bytes_per_page = 2 * kv.page_size * kv.num_kv_heads * kv.head_dim * elem;
  kv.bytes_per_token = 2 * kv.num_layers * kv.num_kv_heads * kv.head_dim * elem;
  return kv;
}

}  // namespace

absl::Status run_compile_pipeline(Graph& graph, PassContext& context,
                                  const std::string& dump_ir_dir) {
  if (absl::Status s = verify(graph); !s.ok()) return s;
  PassManagerOptions options;
  options.dump_ir_dir = dump_ir_dir;  // numbered 00-input.kir, 01-canonicalize.kir, ...
  // Already-fused IR (--from-ir, e.g. a tuned dump) passes through unchanged but still gets its
  // memory and KV plans.
  return run_default_pipeline(graph, context, options);
}

absl::StatusOr<CompileReport> compile_model(const CompileOptions& o) {
  const auto start = std::chrono::steady_clock::now();
  if (absl::Status s = check_arch(o.arch); !s.ok()) return s;
  if (!nvrtc_available()) {
    return absl::FailedPreconditionError(
        "NVRTC is not available: this kiln was built without the CUDA toolkit, so it cannot "
        "compile kernels");
  }
  absl::StatusOr<ModelConfig> config = load_model_config(o.model);
  if (!config.ok()) return config.status();
  absl::StatusOr<std::unique_ptr<Graph>> graph = load_graph(o, *config);
  if (!graph.ok()) return graph.status();
  PassContext ctx;
  if (absl::Status s = run_compile_pipeline(**graph, ctx, o.dump_ir_dir); !s.ok()) return s;
  const std::string ir = print_graph(**graph);
  if (!o.dump_ir_dir.empty()) {
    if (absl::Status s = dump(o.dump_ir_dir, "99-final.kir", ir); !s.ok()) return s;
  }
  absl::StatusOr<LoweredGraph> lowered = lower_graph(**graph);
  if (!lowered.ok()) return lowered.status();

  // Kernels: emit, then compile in parallel through the cache.
  std::vector<KernelJob> jobs;
  for (const KernelSpec& spec : lowered->kernels) {
    absl::StatusOr<std::string> src = emit_kernel_source(spec);
    if (!src.ok())
      return absl::InvalidArgumentError(absl::StrCat(spec.key(), ": ", src.status().message()));
    jobs.push_back({spec.key(), *src});
  }
  KernelCache cache(o.cache_dir.empty() ? default_cache_root() + "/kernels" : o.cache_dir);
  BuildStats stats;
  absl::StatusOr<std::vector<CompiledKernel>> built =
      build_kernels(jobs, o.arch, o.use_cache ? &cache : nullptr, o.threads, &stats);
  if (!built.ok()) return built.status();

  // Weights: references into the checkpoint, hashed once here (in parallel), or packed blobs.
  absl::StatusOr<WeightSet> weights =
      detect_model_format(o.model).value_or(ModelFormat::kGguf) == ModelFormat::kHuggingFaceDir
          ? load_safetensors_weights(o.model)
          : load_gguf_weights(o.model);
  if (!weights.ok()) return weights.status();
  PlanWriter writer;
  nlohmann::json kernels = nlohmann::json::array();
  for (size_t i = 0; i < jobs.size(); ++i) {
    const CompiledKernel& k = (*built)[i];
    const KernelSpec& spec = lowered->kernels[i];
    kernels.push_back({{"key", spec.key()},
                       {"entry", spec.key()},
                       {"family", family_name(spec.family)},
                       {"cubin_blob", writer.add_blob(spec.key() + ".cubin", k.cubin)},
                       {"ptx_blob", writer.add_blob(spec.key() + ".ptx", k.ptx)},
                       {"source_blob", writer.add_blob(spec.key() + ".cu", jobs[i].source)},
                       {"registers", k.registers},
                       {"shared_bytes", k.shared_bytes},
                       {"stack_bytes", k.stack_bytes},
                       {"spill_bytes", k.spill_bytes}});
  }
  nlohmann::json launches = nlohmann::json::array();
  for (const KernelLaunch& l : lowered->launches) {
    nlohmann::json args = nlohmann::json::array();
    for (const KernelArg& a : l.args) args.push_back({{"kind", a.kind}, {"value", a.value}});
    launches.push_back({{"node", l.node},
                        {"kernel", l.kernel},
                        {"launch", launch_json(l.launch)},
                        {"args", args}});
  }
  nlohmann::json gemms = nlohmann::json::array();
  for (const GemmEntry& g : lowered->gemms) {
    gemms.push_back({{"node", g.node},
                     {"m", g.m},
                     {"n", g.n},
                     {"k", g.k},
                     {"a_dtype", dtype_name(g.a_dtype)},
                     {"b_dtype", dtype_name(g.b_dtype)},
                     {"out_dtype", dtype_name(g.out_dtype)},
                     {"epilogue", g.epilogue},
                     {"a", g.a},
                     {"b", g.b},
                     {"bias", g.bias},
                     {"residual", g.residual},
                     {"out", g.out}});
  }
  nlohmann::json misc = {{"workspaces", nlohmann::json::array()},
                         {"aliases", nlohmann::json::array()},
                         {"constants", nlohmann::json::array()}};
  for (const Workspace& w : lowered->workspaces)
    misc["workspaces"].push_back({{"name", w.name}, {"bytes", w.bytes}});
  for (const Alias& a : lowered->aliases)
    misc["aliases"].push_back({{"value", a.value}, {"of", a.of}});
  for (const Constant& c : lowered->constants) {
    misc["constants"].push_back(
        {{"value", c.value}, {"dtype", dtype_name(c.dtype)}, {"scalar", c.scalar}});
  }
  const std::vector<Weight>& all = weights->all();
  std::vector<uint64_t> sums(all.size());
  if (!o.pack_weights) {
    std::atomic<size_t> next{0};
    auto worker = [&] {
      for (size_t i = next++; i < all.size(); i = next++) {
        sums[i] = XXH3_64bits(all[i].bytes.data(), all[i].bytes.size());
      }
    };
    std::vector<std::thread> pool;
    const unsigned n = std::max(1u, std::thread::hardware_concurrency());
    for (unsigned t = 1; t < n; ++t) pool.emplace_back(worker);
    worker();
    for (std::thread& t : pool) t.join();
  }
  nlohmann::json wj = nlohmann::json::array();
  for (size_t i = 0; i < all.size(); ++i) {
    const Weight& w = all[i];
    nlohmann::json e = {{"name", w.name}, {"dtype", dtype_name(w.dtype)}, {"shape", w.shape}};
    if (o.pack_weights) {
      e["blob"] = writer.add_blob(
          "weight:" + w.name,
          std::string(reinterpret_cast<const char*>(w.bytes.data()), w.bytes.size()));
    } else {
      e["file"] = std::filesystem::absolute(w.source_file).string();
      e["offset"] = w.source_offset;
      e["size"] = w.bytes.size();
      e["xxh3"] = sums[i];
      e["source_name"] = w.source_name;
    }
    wj.push_back(e);
  }
  const KvPlan kv = ctx.kv_plan.value_or(kv_plan_for(*config, o.limits));
  nlohmann::json memory = nullptr;
  if (ctx.memory_plan) {
    nlohmann::json bufs = nlohmann::json::array();
    for (const MemoryPlan::Buffer& b : ctx.memory_plan->buffers) {
      bufs.push_back({{"value", b.value},
                      {"offset", b.offset},
                      {"size", b.size},
                      {"first_use", b.first_use},
                      {"last_use", b.last_use}});
    }
    memory = {{"arena_bytes", ctx.memory_plan->arena_bytes},
              {"lower_bound_bytes", ctx.memory_plan->lower_bound_bytes},
              {"alignment", ctx.memory_plan->alignment},
              {"buffers", bufs}};
  }
  std::string tokenizer = o.model;
  if (std::filesystem::is_directory(o.model)) tokenizer = o.model + "/tokenizer.json";
  nlohmann::json manifest = {
      {"format_version", kPlanFormatVersion},
      {"kiln_version", KILN_VERSION},
      {"arch", o.arch},
      {"nvrtc_version", nvrtc_version()},
      {"nvrtc_flags", nvrtc_flags(o.arch)},
      {"model", config_json(*config)},
      {"model_path", std::filesystem::absolute(o.model).string()},
      {"tokenizer", std::filesystem::absolute(tokenizer).string()},
      {"limits",
       {{"max_tokens", o.limits.max_tokens},
        {"max_seqs", o.limits.max_seqs},
        {"page_size", o.limits.page_size},
        {"dtype", dtype_name(o.limits.dtype)}}},
      {"ir", ir},
      {"kernels", kernels},
      {"launches", launches},
      {"gemms", gemms},
      {"workspaces", misc["workspaces"]},
      {"aliases", misc["aliases"]},
      {"constants", misc["constants"]},
      {"memory_plan", memory},
      {"kv_plan",
       {{"page_size", kv.page_size},
        {"layout", kv.layout},
        {"dtype", dtype_name(kv.dtype)},
        {"num_layers", kv.num_layers},
        {"num_kv_heads", kv.num_kv_heads},
        {"head_dim", kv.head_dim},
        {"bytes_per_page", kv.bytes_per_page},
        {"bytes_per_token", kv.bytes_per_token}}},
      {"weights", wj},
  };
  if (absl::Status s = writer.write(o.output, manifest); !s.ok()) return s;

  CompileReport r;
  r.kernels = static_cast<int>(jobs.size());
  r.launches = static_cast<int>(lowered->launches.size());
  r.gemms = static_cast<int>(lowered->gemms.size());
  r.weights = static_cast<int>(all.size());
  r.build = stats;
  r.total_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  r.summary = absl::StrFormat(
      "%s: %d kernels (%d compiled, %d cached, %.2f s), %d launches, %d GEMMs, %d weights, %s, "
      "%.2f s total",
      o.output, r.kernels, stats.compiled, stats.hits, stats.seconds, r.launches, r.gemms,
      r.weights, o.arch, r.total_seconds);
  return r;
}

}  // namespace kiln
