// `kiln ir`: parse, verify and pretty-print IR text (or the built-in example graph), optionally
// after running passes with IR dumps and statistics.
#include <fstream>
#include <iostream>
#include <sstream>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "ir/parser.h"
#include "ir/printer.h"
#include "ir/verifier.h"
#include "models/llama_graph.h"
#include "models/model_source.h"
#include "models/weights.h"
#include "passes/pass_manager.h"
#include "passes/pass_registry.h"
#include "plan/plan_json.h"
#include "tools/commands.h"
#include "tools/example_graph.h"
#include "tools/kv_dtype_flag.h"

namespace kiln::tools {
namespace {

struct IrOptions {
  std::string input;
  bool example = false;
  std::string dtype = "bf16";
  std::string kv_dtype = "auto";  // --kv-dtype (tools/kv_dtype_flag.h)
  StepLimits limits;
  std::string passes;  // comma-separated pass names
  bool default_pipeline = false;
  bool print_ir_after_all = false;
  std::vector<std::string> print_ir_after;
  std::string dump_ir_dir;
  bool list_passes = false;
  bool stats = false;
  int tensor_parallel = 1;  // --tp N: ranks for shard-tensor-parallel
  PlanIrOptions plan;       // for a .kplan input
};

int list_passes() {
  for (const RegisteredPass& p : registered_passes()) {
    std::cout << absl::StrFormat("  %-22s %s\n", p.name, p.description);
  }
  std::cout << "default pipeline: " << absl::StrJoin(default_pipeline(), ",") << "\n";
  return 0;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Runs the requested passes; prints statistics and plans to stderr with --stats.
int run_passes(const IrOptions& opts, Graph& graph, bool* printed) {
  PassContext context;
  // For a model, the stored dtype of its weights, as `kiln compile` gives fuse-horizontal.
  if (!opts.example && !opts.input.empty() && !ends_with(opts.input, ".kir")) {
    absl::StatusOr<WeightSet> weights = load_model_weights(opts.input);
    if (!weights.ok()) {
      std::cerr << "kiln ir: " << weights.status().message() << "\n";
      return 1;
    }
    for (const Weight& w : weights->all()) context.weight_dtypes[w.name] = w.dtype;
  }
  context.tensor_parallel = opts.tensor_parallel;
  std::vector<std::string> names;
  if (opts.default_pipeline) {
    names = default_pipeline();
  } else if (opts.passes.empty()) {
    names = {"shard-tensor-parallel"};  // --tp N alone: the sharded primitive graph
  } else {
    for (absl::string_view n : absl::StrSplit(opts.passes, ',', absl::SkipWhitespace())) {
      names.emplace_back(n);
    }
  }
  PassManagerOptions pm_opts;
  pm_opts.verify_each = true;
  pm_opts.print_ir_after_all = opts.print_ir_after_all;
  pm_opts.print_ir_after.insert(opts.print_ir_after.begin(), opts.print_ir_after.end());
  pm_opts.dump_ir_dir = opts.dump_ir_dir;
  for (const std::string& p : pm_opts.print_ir_after) {
    if (absl::StatusOr<std::unique_ptr<Pass>> known = create_pass(p); !known.ok()) {
      std::cerr << "kiln ir: --print-ir-after: " << known.status().message() << "\n";
      return 2;
    }
  }
  absl::StatusOr<PassManager> pm = PassManager::from_names(names, pm_opts);
  if (!pm.ok()) {
    std::cerr << "kiln ir: " << pm.status().message() << "\n";
    return 2;
  }
  if (absl::Status s = pm->run(graph, context); !s.ok()) {
    std::cerr << "kiln ir: " << s.message() << "\n";
    return 1;
  }
  *printed = opts.print_ir_after_all || !opts.print_ir_after.empty();
  if (opts.stats) {
    std::cerr << pm->stats_report(context);
    if (context.memory_plan) {
      const MemoryPlan& m = *context.memory_plan;
      std::cerr << absl::StrFormat(
          "memory plan: arena %d bytes, max-live lower bound %d bytes (%.3fx)\n", m.arena_bytes,
          m.lower_bound_bytes,
          m.lower_bound_bytes ? double(m.arena_bytes) / m.lower_bound_bytes : 1.0);
    }
    if (context.kv_layout) {
      const KvLayout& k = *context.kv_layout;
      std::cerr << absl::StrFormat(
          "kv layout: %d layers, page size %d, %s %s [%d heads x %d], %d bytes/page/layer, %d "
          "bytes/page, %d bytes/token\n",
          k.num_layers, k.page_size, kv_page_layout_name(k.layout), dtype_name(k.dtype),
          k.num_kv_heads, k.head_dim, k.bytes_per_page_per_layer(), k.bytes_per_page(),
          k.bytes_per_token());
    }
  }
  return 0;
}

// A model (HF dir or GGUF): its primitive step graph.
absl::StatusOr<std::unique_ptr<Graph>> graph_from_model(const IrOptions& opts) {
  absl::StatusOr<ModelConfig> config = load_model_config(opts.input);
  if (!config.ok()) return config.status();
  std::optional<DType> dtype = parse_dtype(opts.dtype);
  if (!dtype || !is_float(*dtype)) {
    return absl::InvalidArgumentError("--dtype must be f32, f16 or bf16, got " + opts.dtype);
  }
  StepLimits limits = opts.limits;
  limits.dtype = *dtype;
  limits.kv_dtype = kv_dtype_of(opts.kv_dtype);
  auto graph = std::make_unique<Graph>();
  if (absl::Status s = build_llama(*config, limits, *graph); !s.ok()) return s;
  return graph;
}

int run_ir(const IrOptions& opts) {
  if (opts.list_passes) return list_passes();
  if (ends_with(opts.input, ".kplan")) {  // a compiled plan: tools/cmd_plan_ir.cc
    PlanIrOptions plan = opts.plan;
    plan.plan = opts.input;
    return run_plan_ir(plan);
  }
  std::unique_ptr<Graph> graph;
  if (opts.example) {
    absl::StatusOr<std::unique_ptr<Graph>> g = build_example_graph();
    if (!g.ok()) {
      std::cerr << "kiln ir: example graph: " << g.status().message() << "\n";
      return 1;
    }
    graph = std::move(*g);
  } else if (opts.input.empty()) {
    std::cerr << "kiln ir: give a model or a .kir file (or --example)\n";
    return 2;
  } else if (!ends_with(opts.input, ".kir")) {
    absl::StatusOr<std::unique_ptr<Graph>> g = graph_from_model(opts);
    if (!g.ok()) {
      std::cerr << "kiln ir: " << g.status().message() << "\n";
      return 1;
    }
    graph = std::move(*g);
  } else {
    std::ifstream in(opts.input, std::ios::binary);
    if (!in) {
      std::cerr << "kiln ir: cannot read " << opts.input << "\n";
      return 1;
    }
    std::stringstream text;
    text << in.rdbuf();
    absl::StatusOr<std::unique_ptr<Graph>> g = parse_graph(text.str());
    if (!g.ok()) {
      std::cerr << opts.input << ":" << g.status().message() << "\n";
      return 1;
    }
    graph = std::move(*g);
  }
  if (absl::Status s = verify(*graph); !s.ok()) {
    std::cerr << "kiln ir: verification failed: " << s.message() << "\n";
    return 1;
  }
  bool printed = false;
  if (opts.default_pipeline || !opts.passes.empty() || opts.tensor_parallel != 1) {
    if (int rc = run_passes(opts, *graph, &printed); rc != 0) return rc;
  } else if (opts.stats) {
    std::cerr << "kiln ir: --stats needs --passes or --default-pipeline\n";
  }
  if (!printed) std::cout << print_graph(*graph);
  return 0;
}

}  // namespace

void add_ir_command(CLI::App& app, int* exit_code) {
  auto opts = std::make_shared<IrOptions>();
  CLI::App* cmd = app.add_subcommand(
      "ir", "Print the verified IR of a model (HF dir or .gguf) or of IR text (.kir)");
  cmd->add_option("input", opts->input, "model directory, .gguf file, or .kir IR text");
  cmd->add_option("--dtype", opts->dtype, "compute dtype of a model's graph (f32, f16, bf16)")
      ->capture_default_str();
  add_kv_dtype_option(cmd, &opts->kv_dtype);
  cmd->add_option("--max-tokens", opts->limits.max_tokens, "tokens per step (symbol T bound)")
      ->capture_default_str();
  cmd->add_option("--max-seqs", opts->limits.max_seqs, "sequences per step (symbol S bound)")
      ->capture_default_str();
  cmd->add_option("--page-size", opts->limits.page_size, "KV cache page size in tokens")
      ->capture_default_str();
  cmd->add_flag("--example", opts->example, "Print the built-in example graph");
  auto* passes = cmd->add_option("--passes", opts->passes, "comma-separated passes to run");
  cmd->add_flag("--default-pipeline", opts->default_pipeline, "run the default pass pipeline")
      ->excludes(passes);
  cmd->add_flag("--print-ir-after-all", opts->print_ir_after_all, "print the IR after every pass");
  cmd->add_option("--print-ir-after", opts->print_ir_after, "print the IR after this pass")
      ->delimiter(',');
  cmd->add_option("--dump-ir", opts->dump_ir_dir,
                  "write numbered .kir files (00-input.kir, 03-fuse-attention.kir, ...) here");
  cmd->add_option("--tp", opts->tensor_parallel,
                  "tensor-parallel ranks: shard the graph over N GPUs (alone: print the sharded "
                  "primitive graph; with --default-pipeline: the whole pipeline over N ranks)")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  cmd->add_flag("--list-passes", opts->list_passes, "list the registered passes");
  cmd->add_flag("--stats", opts->stats, "print per-pass statistics and the plans to stderr");
  cmd->add_flag("--kernels", opts->plan.kernels, "(.kplan) list the plan's kernels");
  cmd->add_option("--source", opts->plan.source, "(.kplan) print one kernel's CUDA source");
  cmd->add_option("--ptx", opts->plan.ptx, "(.kplan) print one kernel's PTX");
  cmd->callback([opts, exit_code] { *exit_code = run_ir(*opts); });
}

}  // namespace kiln::tools
