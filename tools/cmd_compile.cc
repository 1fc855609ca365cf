// `kiln compile` (model -> .kplan) and `kiln inspect` (plan summary).
#include <iostream>
#include <memory>

#include "codegen/compile_model.h"
#include "codegen/kernel_cache.h"
#include "codegen/nvrtc_compiler.h"
#include "codegen/tune/gpu_tuner.h"
#include "plan/plan_file.h"
#include "plan/plan_summary.h"
#include "tools/commands.h"
#include "tools/kv_dtype_flag.h"

namespace kiln::tools {

void add_compile_command(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<CompileOptions>();
  auto dtype = std::make_shared<std::string>("bf16");
  auto tune = std::make_shared<bool>(false);
  CLI::App* cmd = app.add_subcommand("compile", "Compile a model to a plan file (.kplan)");
  cmd->add_option("model", o->model, "model directory (HF) or .gguf file")->required();
  cmd->add_option("-o,--output", o->output, "plan file to write")->required();
  cmd->add_option("--arch", o->arch, "target: sm_90a, sm_89, sm_80")->capture_default_str();
  cmd->add_option("--max-tokens", o->limits.max_tokens, "tokens per step (T bound)")
      ->capture_default_str();
  cmd->add_option("--max-seqs", o->limits.max_seqs, "sequences per step (S bound)")
      ->capture_default_str();
  cmd->add_option("--page-size", o->limits.page_size, "KV page size in tokens")
      ->capture_default_str();
  cmd->add_option("--dtype", *dtype, "activation / KV dtype (bf16, f16)")->capture_default_str();
  auto kv_dtype = std::make_shared<std::string>("auto");
  add_kv_dtype_option(cmd, kv_dtype.get());
  cmd->add_option("--from-ir", o->from_ir, "compile this (fused) .kir instead of the model graph");
  cmd->add_option("--tp", o->tensor_parallel,
                  "tensor-parallel ranks (GPUs): one plan holding every rank's kernels and weight "
                  "slices (attention split by heads, MLP by columns then rows)")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  cmd->add_option("--dump-ir", o->dump_ir_dir, "write the IR before/after the passes here");
  cmd->add_flag("--pack-weights", o->pack_weights, "store the weights inside the plan");
  cmd->add_option("--cache-dir", o->cache_dir, "kernel cache folder (default $KILN_CACHE/kernels)");
  cmd->add_flag("!--no-cache", o->use_cache, "compile every kernel, ignoring the cache");
  cmd->add_option("-j,--jobs", o->threads, "NVRTC threads (0 = all cores)");
  auto gemv = std::make_shared<std::string>("auto");
  cmd->add_option("--gemv", *gemv,
                  "small-batch GEMV path for M <= 16: auto (by weight size: the GEMV under 8 Mi elements), "
                  "cublas (never), gemv (every eligible matmul)")
      ->check(CLI::IsMember({"auto", "cublas", "gemv"}))
      ->capture_default_str();
  auto persistent = std::make_shared<bool>(false);
  auto persistent_batch = std::make_shared<int64_t>(kGemvMaxRows);
  cmd->add_flag("--persistent", *persistent,
                "add a persistent decode kernel: a decode step of few sequences runs as one launch "
                "whose resident blocks take every op's blocks as tasks (every matmul of such a "
                "step then takes the GEMV path); `kiln run/bench/serve --persistent off` runs without it");
  cmd->add_option("--persistent-max-batch", *persistent_batch,
                  "decode steps of at most this many sequences run the persistent kernel (1-16)")
      ->check(CLI::Range(int64_t{1}, int64_t{kGemvMaxRows}))
      ->capture_default_str();
  auto persistent_blocks = std::make_shared<int64_t>(1);
  cmd->add_option("--persistent-blocks-per-sm", *persistent_blocks,
                  "register budget of the persistent kernel: 1 (up to 255 registers a thread) or "
                  "2-4 blocks of it per SM (fewer registers, maybe spills)")
      ->check(CLI::Range(int64_t{1}, int64_t{4}))
      ->capture_default_str();
  cmd->add_flag("--tune", *tune,
                "time the fused kernels' candidate configurations on GPU 0 and write the fastest "
                "into the IR (cached in <cache dir>/tune.json)");
  cmd->callback([o, dtype, kv_dtype, gemv, tune, persistent, persistent_batch, persistent_blocks,
                 exit_code] {
    if (*persistent) o->persistent = PersistentOptions{*persistent_batch, *persistent_blocks};
    o->gemv.default_choice = *gemv == "cublas" ? GemvChoice::kCublas
                             : *gemv == "gemv" ? GemvChoice::kGemv
                                               : GemvChoice::kHeuristic;
    std::optional<DType> dt = parse_dtype(*dtype);
    if (!dt || (*dt != DType::kBF16 && *dt != DType::kF16 && *dt != DType::kF32)) {
      std::cerr << "kiln compile: --dtype must be bf16, f16 or f32\n";
      *exit_code = 2;
      return;
    }
    o->limits.dtype = *dt;
    o->limits.kv_dtype = kv_dtype_of(*kv_dtype);
    std::unique_ptr<GraphTuner> tuner;
    if (*tune) {
      absl::StatusOr<std::unique_ptr<GraphTuner>> t =
          make_gpu_tuner(o->cache_dir.empty() ? default_cache_root() + "/kernels" : o->cache_dir);
      if (t.ok()) {
        tuner = std::move(*t);
        o->tuner = tuner.get();
      } else {
        std::cerr << "kiln compile --tune: no GPU to tune on (" << t.status().message()
                  << "); compiling with the default configurations\n";
      }
    }
    absl::StatusOr<CompileReport> r = compile_model(*o);
    o->tuner = nullptr;
    if (!r.ok()) {
      std::cerr << "kiln compile: " << r.status().message() << "\n";
      *exit_code = 1;
      return;
    }
    if (!r->tune.empty()) std::cout << r->tune;
    std::cout << r->summary << "\n";
  });
}

void add_inspect_command(CLI::App& app, int* exit_code) {
  auto path = std::make_shared<std::string>();
  auto verify = std::make_shared<bool>(false);
  CLI::App* cmd = app.add_subcommand("inspect", "Summarize a plan file");
  cmd->add_option("plan", *path, ".kplan file")->required();
  cmd->add_flag("--verify", *verify, "also check every referenced weight's checksum");
  cmd->callback([path, verify, exit_code] {
    PlanLoadOptions opts;
    opts.weights = *verify ? WeightCheck::kChecksum : WeightCheck::kSize;
    absl::StatusOr<LoadedPlan> plan = read_plan(*path, opts);
    if (!plan.ok()) {
      std::cerr << "kiln inspect: " << plan.status().message() << "\n";
      *exit_code = 1;
      return;
    }
    std::cout << plan_summary(*plan);
  });
}

}  // namespace kiln::tools
