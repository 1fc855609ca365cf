// The `kiln compile` pipeline (see compile_model.h): each stage below fills one part of the Plan.
#include "codegen/compile_model.h"

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "codegen/kernel_source.h"
#include "codegen/lowering.h"
#include "ir/parser.h"
#include "ir/printer.h"
#include "ir/verifier.h"
#include "models/model_source.h"
#include "models/weights.h"
#include "passes/pass_manager.h"
#include "plan/weight_parts.h"
#include "xxhash.h"

namespace kiln {
namespace {

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

// Where the plan came from and what it targets.
void fill_header(const CompileOptions& o, const ModelConfig& config, Plan& p) {
  p.kiln_version = KILN_VERSION;
  p.arch = o.arch;
  p.nvrtc_version = o.build_kernels ? nvrtc_version() : "";
  p.nvrtc_flags = o.build_kernels ? nvrtc_flags(o.arch) : std::vector<std::string>{};
  p.model = config;
  p.model_path = std::filesystem::absolute(o.model).string();
  const std::string tokenizer =
      std::filesystem::is_directory(o.model) ? o.model + "/tokenizer.json" : o.model;
  p.tokenizer_path = std::filesystem::absolute(tokenizer).string();
  p.limits = o.limits;
}

// The lowering's launches, GEMMs and buffers, and one PlanKernel per unique spec; with
// build_kernels, the sources are emitted and compiled (in parallel, through the cache) and their
// cubin, PTX and source become blobs.
absl::Status add_kernels(const LoweredGraph& lowered, const CompileOptions& o, CompiledPlan& out) {
  Plan& p = out.plan;
  p.launches = lowered.launches;
  p.gemms = lowered.gemms;
  p.workspaces = lowered.workspaces;
  p.aliases = lowered.aliases;
  p.constants = lowered.constants;
  p.collectives = lowered.collectives;
  p.kernels = lowered.kernels;
  p.persistent = lowered.persistent;
  p.cascades = lowered.cascades;
  if (!o.build_kernels) return absl::OkStatus();
  std::vector<KernelJob> jobs;
  for (const std::shared_ptr<const KernelSpec>& spec : lowered.specs) {
    absl::StatusOr<std::string> src = emit_kernel_source(*spec);
    if (!src.ok()) return src.status();
    jobs.push_back({spec->key(), *std::move(src)});
  }
  KernelCache cache(o.cache_dir.empty() ? default_cache_root() + "/kernels" : o.cache_dir);
  absl::StatusOr<std::vector<CompiledKernel>> built =
      build_kernels(jobs, o.arch, o.use_cache ? &cache : nullptr, o.threads, &out.report.build);
  if (!built.ok()) return built.status();
  auto add_blob = [&](std::string name, std::string bytes) {
    out.blobs.push_back({std::move(name), std::move(bytes)});
    return static_cast<int>(out.blobs.size()) - 1;
  };
  for (size_t i = 0; i < jobs.size(); ++i) {
    CompiledKernel& c = (*built)[i];
    PlanKernel& k = p.kernels[i];
    k.registers = c.registers;
    k.shared_bytes = c.shared_bytes;
    k.stack_bytes = c.stack_bytes;
    k.spill_bytes = c.spill_bytes;
    k.cubin_blob = add_blob(k.key + ".cubin", std::move(c.cubin));
    k.ptx_blob = add_blob(k.key + ".ptx", std::move(c.ptx));
    k.source_blob = add_blob(k.key + ".cu", std::move(jobs[i].source));
  }
  return absl::OkStatus();
}

// A derived param of the final IR (a stack of checkpoint rows, e.g. fuse-horizontal's Q/K/V, or
// a tensor-parallel rank's slice) as a plan weight whose parts the runtimes assemble at load
// (plan/weight_parts.h): held by every rank (`rank` -1) or by one.
absl::Status add_derived_weight(const Value& param, const std::vector<ParamPart>& parts, int rank,
                                const WeightSet& weights, Plan& p) {
  const std::string who = rank < 0 ? absl::StrCat("@", param.name)
                                   : absl::StrCat("@", param.name, " (rank ", rank, ")");
  const Weight* first = weights.find(parts[0].source);
  if (first == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(who, " takes ", slice_axis_name(parts[0].axis),
                                                   " of \"", parts[0].source,
                                                   "\", which the checkpoint does not hold"));
  }
  PlanWeight& w = p.weights.emplace_back();
  w.name = param.name;
  w.rank = rank;
  w.dtype = first->dtype;
  w.shape = first->shape;
  const size_t along = parts[0].axis == SliceAxis::kRows ? 0 : 1;
  if (along < w.shape.size() && static_cast<size_t>(param.type.rank()) > along) {
    w.shape[along] = param.type.shape[along].value;
  }
  for (const ParamPart& part : parts)
    w.parts.push_back({part.source, part.axis, part.begin, part.end});
  // The load-time layout rules (plan/weight_parts.h), applied now so that an edited IR fails at
  // compile time naming the part; then the IR param's dims against the checkpoint's.
  if (absl::StatusOr<std::vector<WeightByteRange>> ranges = weight_byte_ranges(p, w);
      !ranges.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(who, ": ", ranges.status().message()));
  }
  bool same = static_cast<size_t>(param.type.rank()) == w.shape.size();
  for (size_t d = 0; same && d < w.shape.size(); ++d) {
    same = !param.type.shape[d].is_symbolic() && param.type.shape[d].value == w.shape[d];
  }
  if (!same) {
    return absl::InvalidArgumentError(absl::StrCat(who, " is ", param.type.to_string(),
                                                   " but its parts make [",
                                                   absl::StrJoin(w.shape, ","), "]"));
  }
  return absl::OkStatus();
}

// Weights: references into the checkpoint (hashed once here, in parallel), or packed blobs; then
// the graph's derived params.
absl::Status add_weights(const CompileOptions& o, const WeightSet& weights, const Graph& graph,
                         CompiledPlan& out) {
  const std::vector<Weight>& all = weights.all();
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
  for (size_t i = 0; i < all.size(); ++i) {
    const Weight& w = all[i];
    PlanWeight& pw = out.plan.weights.emplace_back();
    pw.name = w.name;
    pw.dtype = w.dtype;
    pw.shape = w.shape;
    pw.source_name = w.source_name;
    if (o.pack_weights) {
      out.blobs.push_back(
          {"weight:" + w.name,
           std::string(reinterpret_cast<const char*>(w.bytes.data()), w.bytes.size())});
      pw.blob = static_cast<int>(out.blobs.size()) - 1;
    } else {
      pw.file = std::filesystem::absolute(w.source_file).string();
      pw.offset = w.source_offset;
      pw.size = w.bytes.size();
      pw.xxh3 = sums[i];
    }
  }
  for (const Value* param : graph.params()) {
    if (!param->parts.empty()) {
      if (absl::Status s = add_derived_weight(*param, param->parts, -1, weights, out.plan);
          !s.ok()) {
        return s;
      }
    }
    for (size_t r = 0; r < param->rank_parts.size(); ++r) {
      absl::Status s =
          add_derived_weight(*param, param->rank_parts[r], static_cast<int>(r), weights, out.plan);
      if (!s.ok()) return s;
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::string_view CompiledPlan::blob(int index) const {
  if (index < 0 || static_cast<size_t>(index) >= blobs.size()) return {};
  return blobs[index].bytes;
}

absl::Status run_compile_pipeline(Graph& graph, PassContext& context,
                                  const std::string& dump_ir_dir) {
  if (absl::Status s = verify(graph); !s.ok()) return s;
  PassManagerOptions options;
  options.dump_ir_dir = dump_ir_dir;  // numbered 00-input.kir, 01-canonicalize.kir, ...
  // Already-fused IR (--from-ir, e.g. a tuned dump) passes through unchanged but still gets its
  // memory plan and KV layout.
  return run_default_pipeline(graph, context, options);
}

absl::StatusOr<CompiledPlan> build_plan(const CompileOptions& o) {
  const auto start = std::chrono::steady_clock::now();
  if (absl::Status s = check_arch(o.arch); !s.ok()) return s;
  if (o.build_kernels && !nvrtc_available()) {
    return absl::FailedPreconditionError(
        "NVRTC is not available: this kiln was built without the CUDA toolkit, so it cannot "
        "compile kernels");
  }
  absl::StatusOr<ModelConfig> config = load_model_config(o.model);
  if (!config.ok()) return config.status();
  absl::StatusOr<std::unique_ptr<Graph>> graph = load_graph(o, *config);
  if (!graph.ok()) return graph.status();
  absl::StatusOr<WeightSet> weights = load_model_weights(o.model);
  if (!weights.ok()) return weights.status();
  PassContext ctx;
  for (const Weight& w : weights->all()) ctx.weight_dtypes[w.name] = w.dtype;
  ctx.tensor_parallel = o.tensor_parallel;
  if (absl::Status s = run_compile_pipeline(**graph, ctx, o.dump_ir_dir); !s.ok()) return s;
  if (!ctx.kv_layout) {
    return absl::InvalidArgumentError(
        "plan-kv found no paged KV cache inputs in the graph: a step graph reads k_cache.<l> and "
        "v_cache.<l> (see models/llama_graph.h)");
  }

  CompiledPlan out;
  if (o.tuner != nullptr) {
    absl::StatusOr<std::string> report = o.tuner->tune(**graph);
    if (!report.ok()) return report.status();
    out.report.tune = *report;
  }
  Plan& p = out.plan;
  fill_header(o, *config, p);
  p.ir = print_graph(**graph);
  p.memory = ctx.memory_plan;
  p.kv = *ctx.kv_layout;
  p.ranks = (*graph)->ranks();
  p.limits.page_size = p.kv.page_size;
  // The KV layout is the home of the cache's dtype (a --from-ir graph decides its own).
  p.limits.kv_dtype.reset();
  if (p.kv.has_scales()) p.limits.kv_dtype = p.kv.dtype;
  if (!o.dump_ir_dir.empty()) {
    if (absl::Status s = dump(o.dump_ir_dir, "99-final.kir", p.ir); !s.ok()) return s;
  }
  LoweringOptions lowering;
  lowering.gemv = o.gemv;
  if (o.persistent) {
    // Every matmul of a small-batch decode step must be a task: the GEMV path wherever it applies
    // (a per-shape choice made explicitly still stands).
    lowering.gemv.default_choice = GemvChoice::kGemv;
    lowering.persistent = o.persistent;
  }
  absl::StatusOr<LoweredGraph> lowered = lower_graph(**graph, lowering);
  if (lowered.ok()) {
    if (absl::Status s = add_kernels(*lowered, o, out); !s.ok()) return s;
  } else if (o.build_kernels || !absl::IsUnimplemented(lowered.status())) {
    return lowered.status();
  }
  // else: a plan for the reference backend alone (e.g. an f32 graph, which has no GPU
  // attention kernels): it carries the IR, weights and KV layout but no launches, and the CUDA
  // backend refuses it by name.
  if (absl::Status s = add_weights(o, *weights, **graph, out); !s.ok()) return s;

  CompileReport& r = out.report;
  r.kernels = static_cast<int>(p.kernels.size());
  r.launches = static_cast<int>(p.launches.size());
  r.gemms = static_cast<int>(p.gemms.size());
  r.weights = static_cast<int>(p.weights.size());
  r.total_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return out;
}

absl::StatusOr<CompileReport> compile_model(const CompileOptions& o) {
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<CompiledPlan> built = build_plan(o);
  if (!built.ok()) return built.status();
  if (absl::Status s = write_plan(o.output, built->plan, built->blobs); !s.ok()) return s;
  CompileReport r = built->report;
  r.total_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  r.summary = absl::StrFormat(
      "%s: %d kernels (%d compiled, %d cached, %.2f s), %d launches, %d GEMMs, %d weights, %s, "
      "%.2f s total",
      o.output, r.kernels, r.build.compiled, r.build.hits, r.build.seconds, r.launches, r.gemms,
      r.weights, o.arch, r.total_seconds);
  return r;
}

}  // namespace kiln
