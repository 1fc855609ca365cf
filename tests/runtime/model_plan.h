// Test helper: the plan `kiln run <model>` builds in memory (no kernels), and a reference backend
// + engine over it, for the engine and backend tests.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "ir/printer.h"
#include "models/llama_graph.h"
#include "models/model_source.h"
#include "models/tokenizer_source.h"
#include "models/weights.h"
#include "passes/pass_manager.h"
#include "plan/plan.h"
#include "runtime/engine/engine.h"
#include "runtime/reference/reference_backend.h"
#include "xxhash.h"

namespace kiln::testing {

/// The model at `path` (HF dir or .gguf) compiled in memory for the reference backend.
inline absl::StatusOr<Plan> plan_for_model(const std::string& path, const StepLimits& limits) {
  absl::StatusOr<ModelFormat> format = detect_model_format(path);
  if (!format.ok()) return format.status();
  absl::StatusOr<ModelConfig> config = load_model_config(path);
  if (!config.ok()) return config.status();
  Graph g;
  if (absl::Status s = build_llama(*config, limits, g); !s.ok()) return s;
  PassContext ctx;
  if (absl::Status s = run_default_pipeline(g, ctx); !s.ok()) return s;
  Plan p;
  p.model = *config;
  p.model_path = std::filesystem::absolute(path).string();
  p.tokenizer_path = *format == ModelFormat::kGguf
                         ? p.model_path
                         : (std::filesystem::path(p.model_path) / "tokenizer.json").string();
  p.limits = limits;
  p.ir = print_graph(g);
  p.kv.page_size = static_cast<int32_t>(limits.page_size);
  p.kv.dtype = limits.dtype;
  p.kv.num_layers = static_cast<int32_t>(config->num_layers);
  p.kv.num_kv_heads = static_cast<int32_t>(config->num_kv_heads);
  p.kv.head_dim = static_cast<int32_t>(config->head_dim);
  absl::StatusOr<WeightSet> weights =
      *format == ModelFormat::kGguf ? load_gguf_weights(path) : load_safetensors_weights(path);
  if (!weights.ok()) return weights.status();
  for (const Weight& w : weights->all()) {
    PlanWeight pw;
    pw.name = w.name;
    pw.dtype = w.dtype;
    pw.shape = w.shape;
    pw.file = std::filesystem::absolute(w.source_file).string();
    pw.source_name = w.source_name;
    pw.offset = w.source_offset;
    pw.size = w.bytes.size();
    pw.xxh3 = XXH3_64bits(w.bytes.data(), w.bytes.size());
    p.weights.push_back(std::move(pw));
  }
  return p;
}

/// A model loaded as `kiln run` loads it: plan, reference backend, tokenizer.
struct LoadedModel {
  Plan plan;
  std::unique_ptr<ReferenceBackend> backend;
  std::unique_ptr<Tokenizer> tokenizer;
};

inline absl::StatusOr<LoadedModel> load_model(const std::string& path, const StepLimits& limits,
                                              const BackendOptions& options = {}) {
  absl::StatusOr<Plan> plan = plan_for_model(path, limits);
  if (!plan.ok()) return plan.status();
  absl::StatusOr<std::unique_ptr<ReferenceBackend>> backend =
      ReferenceBackend::create(*plan, options);
  if (!backend.ok()) return backend.status();
  absl::StatusOr<Tokenizer> tokenizer = load_tokenizer(plan->tokenizer_path);
  if (!tokenizer.ok()) return tokenizer.status();
  return LoadedModel{std::move(*plan), std::move(*backend),
                     std::make_unique<Tokenizer>(std::move(*tokenizer))};
}

}  // namespace kiln::testing
