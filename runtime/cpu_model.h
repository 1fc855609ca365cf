// CpuModel: a model loaded for the CPU reference backend — config, tokenizer, weights (mapped or
// converted to the compute dtype), the compiled step graph, and its ReferenceExecutor.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ir/graph.h"
#include "models/llama_graph.h"
#include "models/model_config.h"
#include "models/tokenizer.h"
#include "models/weights.h"
#include "runtime/host_tensor.h"
#include "runtime/reference_executor.h"

namespace kiln {

struct CpuModelOptions {
  /// Weights are kept (or dequantized to) this dtype: bf16 halves the bytes each decode step
  /// streams (the CPU decode is bound by reading weights); f32 keeps quantized values exact.
  DType weights_dtype = DType::kBF16;
  StepLimits limits;    // limits.dtype is set from weights_dtype
  int num_threads = 0;  // 0 = hardware concurrency
  /// Run passes/'s default pipeline (the fused graph the GPU runs too); off = the primitive graph.
  bool run_passes = true;
};

class CpuModel {
 public:
  /// Loads an HF directory or a GGUF file. Errors name the path and what is wrong with it.
  static absl::StatusOr<std::unique_ptr<CpuModel>> load(const std::string& path,
                                                        const CpuModelOptions& options = {});

  const ModelConfig& config() const { return config_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const Graph& graph() const { return executor_->graph(); }
  ReferenceExecutor& executor() { return *executor_; }
  const StepLimits& limits() const { return limits_; }
  const std::string& path() const { return path_; }
  /// Bytes of weights one decode step reads (for bandwidth figures).
  int64_t weight_bytes() const { return weight_bytes_; }

 private:
  CpuModel() = default;
  std::string path_;
  ModelConfig config_;
  StepLimits limits_;
  std::unique_ptr<Tokenizer> tokenizer_;
  WeightSet weights_;
  std::vector<std::vector<uint8_t>> converted_;  // weights converted from their file dtype
  ParamViews params_;
  std::unique_ptr<ReferenceExecutor> executor_;
  int64_t weight_bytes_ = 0;
};

}  // namespace kiln
