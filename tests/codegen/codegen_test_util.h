// Shared helpers of the codegen tests: fused step graphs made the way `kiln compile` makes them
// (build_llama + the default pass pipeline, from a model config written here), and a kernel cache
// that persists in the build's fixtures folder across test runs (NVRTC compiles take seconds).
#pragma once

#include <memory>
#include <optional>
#include <string>

#include <gtest/gtest.h>

#include "codegen/kernel_cache.h"
#include "ir/graph.h"
#include "models/llama_graph.h"
#include "models/model_config.h"
#include "passes/pass_manager.h"
#include "plan/launch_binding.h"
#include "tests/fixtures.h"

namespace kiln::testing {

/// SmolLM2-135M's shapes (hidden 576, 9 query / 3 KV heads of 64, ffn 1536, vocab 49152, rope
/// theta 1e5, tied embeddings) with `layers` layers.
inline ModelConfig smollm2_config(int64_t layers = 2) {
  ModelConfig c;
  c.architecture = "llama";
  c.source_architecture = "LlamaForCausalLM";
  c.hidden_size = 576;
  c.num_layers = layers;
  c.num_heads = 9;
  c.num_kv_heads = 3;
  c.head_dim = 64;
  c.intermediate_size = 1536;
  c.vocab_size = 49152;
  c.max_context = 8192;
  c.rms_eps = 1e-5;
  c.rope_theta = 100000.0;
  c.tie_embeddings = true;
  c.bos_id = 1;
  c.eos_ids = {2};
  return c;
}

/// head_dim 128 with GQA 2 and llama3 rope scaling (the other attention and rope variants), one
/// layer, untied lm_head.
inline ModelConfig d128_llama3_config() {
  ModelConfig c = smollm2_config(1);
  c.hidden_size = 256;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 128;
  c.intermediate_size = 512;
  c.vocab_size = 256;
  c.rope_theta = 500000.0;
  c.rope_scaling = RopeScaling{8.0, 1.0, 4.0, 8192};
  c.tie_embeddings = false;
  return c;
}

/// The fused graph `kiln compile` lowers for `config` at `dtype` (and `kv_dtype`, e.g. fp8e4m3):
/// build_llama, then the default pipeline. Null (with a test failure) when either fails.
inline std::unique_ptr<Graph> fused_graph(const ModelConfig& config, DType dtype = DType::kBF16,
                                          std::optional<DType> kv_dtype = std::nullopt) {
  auto g = std::make_unique<Graph>();
  StepLimits limits;
  limits.dtype = dtype;
  limits.kv_dtype = kv_dtype;
  if (absl::Status s = build_llama(config, limits, *g); !s.ok()) {
    ADD_FAILURE() << "build_llama: " << s;
    return nullptr;
  }
  PassContext context;
  if (absl::Status s = run_default_pipeline(*g, context); !s.ok()) {
    ADD_FAILURE() << "default pipeline: " << s;
    return nullptr;
  }
  return g;
}

/// Kernel cache kept in the fixtures folder: keyed by source/arch/NVRTC/flags like the real one.
inline std::string fixture_kernel_cache() { return fixtures_dir() + "/kernel-cache"; }

/// A launch resolver that puts every buffer at a distinct dummy address (binding checks).
class AnyAddress : public LaunchResolver {
 public:
  absl::StatusOr<uint64_t> tensor(const std::string&) override { return next_ += 256; }
  absl::StatusOr<uint64_t> workspace(const std::string&) override { return next_ += 256; }
  absl::StatusOr<uint64_t> runtime(RuntimeInput) override { return next_ += 256; }

 private:
  uint64_t next_ = 0;
};

}  // namespace kiln::testing
