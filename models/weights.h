// The loader-independent view of a checkpoint: kiln parameter name -> dtype, shape, bytes.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "ir/dtype.h"
#include "models/gguf.h"
#include "models/safetensors.h"

namespace kiln {

/// One parameter as stored in its checkpoint. Matrices keep HF's [out_features, in_features]
/// orientation (GGUF's ne[] reversed gives the same). `bytes` points into a file the owning
/// WeightSet keeps mapped.
struct Weight {
  std::string name;  // kiln's canonical name ("layers.3.q_proj")
  DType dtype;       // f32, f16, bf16 or a GGUF block type
  std::vector<int64_t> shape;
  absl::Span<const uint8_t> bytes;
  std::string source_file;  // the file the bytes live in
  uint64_t source_offset = 0;
  std::string source_name;  // the tensor's name in that file ("blk.3.attn_q.weight")

  /// Number of elements (product of shape; 1 for a scalar).
  int64_t elements() const;
};

/// All parameters of a model, owning the mapped files their bytes live in. Move-only.
class WeightSet {
 public:
  WeightSet() = default;
  WeightSet(WeightSet&&) = default;
  WeightSet& operator=(WeightSet&&) = default;

  /// The parameter with kiln name `name`, or nullptr.
  const Weight* find(std::string_view name) const;
  /// Every parameter, in checkpoint order.
  const std::vector<Weight>& all() const { return weights_; }
  /// Checkpoint tensors that map to no kiln parameter (skipped; e.g. "rope_freqs.weight").
  const std::vector<std::string>& ignored() const { return ignored_; }
  /// The GGUF file for a GGUF checkpoint (its metadata holds the config), else nullptr.
  const GgufFile* gguf() const { return gguf_.get(); }

 private:
  friend absl::StatusOr<WeightSet> load_safetensors_weights(const std::string& model_dir);
  friend absl::StatusOr<WeightSet> load_gguf_weights(const std::string& gguf_path);
  absl::Status add(Weight w);

  std::vector<Weight> weights_;
  std::map<std::string, size_t, std::less<>> by_name_;
  std::vector<std::string> ignored_;
  std::vector<std::unique_ptr<SafetensorsFile>> safetensors_;
  std::unique_ptr<GgufFile> gguf_;
};

/// Loads `model_dir/model.safetensors`, or, when `model_dir/model.safetensors.index.json`
/// exists, every shard it names. Every shard is validated; a tensor the index assigns to a shard
/// that lacks it, or a tensor present in two shards, is an error.
absl::StatusOr<WeightSet> load_safetensors_weights(const std::string& model_dir);
/// Loads every tensor of a GGUF file (kept in its stored type; see to_f32 / to_bf16).
absl::StatusOr<WeightSet> load_gguf_weights(const std::string& gguf_path);

/// The weights of a model path as `kiln compile` takes it: an HF directory's safetensors, else
/// a GGUF file.
absl::StatusOr<WeightSet> load_model_weights(const std::string& model);

/// Widens or dequantizes any supported dtype to f32; `out.size()` must equal w.elements().
absl::Status to_f32(const Weight& w, absl::Span<float> out);
/// Converts to bf16 (round-to-nearest-even from f32; quantized types are dequantized first).
absl::Status to_bf16(const Weight& w, absl::Span<uint16_t> out);

}  // namespace kiln
