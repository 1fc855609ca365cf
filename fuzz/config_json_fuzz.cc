// libFuzzer target: an HF config.json through the typed config reader; a config it accepts is
// built into the step graph (small ones only: the graph is sized by the config) and verified.
#include <cstdint>
#include <string>

#include "ir/verifier.h"
#include "models/llama_graph.h"
#include "models/model_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<kiln::ModelConfig> config = kiln::model_config_from_hf_json(text);
  if (!config.ok()) return 0;
  (void)config->summary();
  if (config->num_layers > 4 || config->hidden_size > 4096) return 0;
  kiln::StepLimits limits;
  limits.max_tokens = 8;
  limits.max_seqs = 2;
  limits.max_context = std::min<int64_t>(config->max_context, 64);
  kiln::Graph graph;
  if (kiln::build_llama(*config, limits, graph).ok() && !kiln::verify(graph).ok()) {
    __builtin_trap();  // build_llama accepted the config but emitted an invalid graph
  }
  return 0;
}
