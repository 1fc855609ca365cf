// Builds WeightSets from safetensors / GGUF checkpoints and converts weights to f32 / bf16.
#include "models/weights.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <set>

#include "absl/strings/str_cat.h"
#include "models/dequantize.h"
#include "models/model_source.h"
#include "models/weight_names.h"

namespace kiln {

int64_t Weight::elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;  // loaders checked the product cannot overflow
  return n;
}

const Weight* WeightSet::find(std::string_view name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &weights_[it->second];
}

absl::Status WeightSet::add(Weight w) {
  if (auto it = by_name_.find(w.name); it != by_name_.end()) {
    const Weight& prev = weights_[it->second];
    return absl::InvalidArgumentError(absl::StrCat(
        w.source_file, ": tensor '", w.source_name, "' maps to kiln parameter '", w.name,
        "', which '", prev.source_name, "' in ", prev.source_file, " already provides"));
  }
  by_name_.emplace(w.name, weights_.size());
  weights_.push_back(std::move(w));
  return absl::OkStatus();
}

absl::StatusOr<WeightSet> load_safetensors_weights(const std::string& model_dir) {
  namespace fs = std::filesystem;
  WeightSet set;
  const fs::path dir(model_dir);
  const fs::path index_path = dir / "model.safetensors.index.json";
  std::error_code ec;
  // name -> shard file, when sharded; a single file otherwise.
  std::map<std::string, std::string> weight_map;
  std::vector<std::string> files;
  if (fs::exists(index_path, ec)) {
    auto wm = read_safetensors_index(index_path.string());
    if (!wm.ok()) return wm.status();
    weight_map = std::move(*wm);
    std::set<std::string> unique;
    for (const auto& [name, shard] : weight_map) {
      if (unique.insert(shard).second) files.push_back(shard);
    }
    if (files.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(index_path.string(), ": weight_map lists no tensors"));
    }
  } else {
    files.push_back("model.safetensors");
  }

  std::map<std::string, std::string> seen;  // source tensor name -> file holding it
  for (const std::string& file : files) {
    const std::string path = (dir / file).string();
    auto opened = SafetensorsFile::open(path);
    if (!opened.ok()) return opened.status();
    const SafetensorsFile& f = **opened;
    for (const SafetensorsTensorInfo& t : f.tensors()) {
      if (auto [it, inserted] = seen.emplace(t.name, path); !inserted) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": duplicate tensor '", t.name, "' (also in ", it->second, ")"));
      }
      if (!weight_map.empty()) {
        auto it = weight_map.find(t.name);
        // A tensor the index does not list, or lists in another shard, would be ambiguous.
        if (it == weight_map.end() || it->second != file) {
          set.ignored_.push_back(t.name);
          continue;
        }
      }
      std::optional<std::string> canonical =
          canonical_weight_name(WeightNaming::kHuggingFace, t.name);
      if (!canonical) {
        set.ignored_.push_back(t.name);
        continue;
      }
      absl::Status s = set.add(Weight{.name = *canonical,
                                      .dtype = t.dtype,
                                      .shape = t.shape,
                                      .bytes = f.tensor_bytes(t),
                                      .source_file = path,
                                      .source_offset = t.offset,
                                      .source_name = t.name});
      if (!s.ok()) return s;
    }
    set.safetensors_.push_back(std::move(*opened));
  }
  for (const auto& [name, shard] : weight_map) {
    auto it = seen.find(name);
    if (it == seen.end() || it->second != (dir / shard).string()) {
      return absl::InvalidArgumentError(absl::StrCat((dir / shard).string(), ": tensor '", name,
                                                     "' is listed in ", index_path.string(),
                                                     " but absent from this shard"));
    }
  }
  return set;
}

absl::StatusOr<WeightSet> load_model_weights(const std::string& model) {
  return detect_model_format(model).value_or(ModelFormat::kGguf) == ModelFormat::kHuggingFaceDir
             ? load_safetensors_weights(model)
             : load_gguf_weights(model);
}

absl::StatusOr<WeightSet> load_gguf_weights(const std::string& gguf_path) {
  auto opened = GgufFile::open(gguf_path);
  if (!opened.ok()) return opened.status();
  WeightSet set;
  for (const GgufTensorInfo& t : (*opened)->tensors()) {
    std::optional<std::string> canonical = canonical_weight_name(WeightNaming::kGguf, t.name);
    if (!canonical) {
      set.ignored_.push_back(t.name);
      continue;
    }
    absl::Status s = set.add(Weight{.name = *canonical,
                                    .dtype = t.dtype,
                                    .shape = t.shape,
                                    .bytes = (*opened)->tensor_bytes(t),
                                    .source_file = gguf_path,
                                    .source_offset = t.offset,
                                    .source_name = t.name});
    if (!s.ok()) return s;
  }
  set.gguf_ = std::move(*opened);
  return set;
}

namespace {

// Checks that `w.bytes` holds exactly w.elements() values of w.dtype and `out_size` matches.
absl::Status check_sizes(const Weight& w, size_t out_size) {
  const int64_t n = w.elements();
  if (out_size != static_cast<uint64_t>(n)) {
    return absl::InvalidArgumentError(absl::StrCat(w.source_file, ": tensor '", w.source_name,
                                                   "' has ", n, " elements, output holds ",
                                                   out_size));
  }
  const int64_t be = block_elements(w.dtype);
  if (n % be != 0 || static_cast<uint64_t>(n / be * block_bytes(w.dtype)) != w.bytes.size()) {
    return absl::InvalidArgumentError(absl::StrCat(w.source_file, ": tensor '", w.source_name,
                                                   "' holds ", w.bytes.size(), " bytes, not ", n,
                                                   " elements of ", dtype_name(w.dtype)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status to_f32(const Weight& w, absl::Span<float> out) {
  if (absl::Status s = check_sizes(w, out.size()); !s.ok()) return s;
  const uint8_t* p = w.bytes.data();
  const size_t n = out.size();
  switch (w.dtype) {
    case DType::kF32:
      std::memcpy(out.data(), p, n * sizeof(float));  // mmapped bytes may be unaligned
      return absl::OkStatus();
    case DType::kF16:
    case DType::kBF16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        out[i] = w.dtype == DType::kF16 ? f16_to_f32(h) : bf16_to_f32(h);
      }
      return absl::OkStatus();
    case DType::kQ8_0:
    case DType::kQ4_0:
    case DType::kQ4_1:
    case DType::kQ4_K:
    case DType::kQ6_K: return dequantize_row(w.dtype, p, static_cast<int64_t>(n), out.data());
    case DType::kFP8E4M3:
    case DType::kI32:
    case DType::kI64:
    case DType::kU8: break;
  }
  return absl::InvalidArgumentError(absl::StrCat(w.source_file, ": tensor '", w.source_name,
                                                 "' has dtype ", dtype_name(w.dtype),
                                                 ", which cannot be converted to f32"));
}

absl::Status to_bf16(const Weight& w, absl::Span<uint16_t> out) {
  if (absl::Status s = check_sizes(w, out.size()); !s.ok()) return s;
  if (w.dtype == DType::kBF16) {
    std::memcpy(out.data(), w.bytes.data(), out.size() * sizeof(uint16_t));
    return absl::OkStatus();
  }
  // Convert in chunks of whole blocks so a large tensor needs no full f32 copy.
  const int64_t be = block_elements(w.dtype);
  const int64_t chunk = be * std::max<int64_t>(1, 65536 / be);
  const int64_t n = static_cast<int64_t>(out.size());
  const int64_t bytes_per_block = block_bytes(w.dtype);
  std::vector<float> buf(static_cast<size_t>(std::min(chunk, n)));
  for (int64_t start = 0; start < n; start += chunk) {
    const int64_t len = std::min(chunk, n - start);
    Weight part = w;  // a view of this chunk's blocks
    part.shape = {len};
    part.bytes = w.bytes.subspan(static_cast<size_t>(start / be * bytes_per_block),
                                 static_cast<size_t>(len / be * bytes_per_block));
    if (absl::Status s = to_f32(part, absl::MakeSpan(buf.data(), len)); !s.ok()) return s;
    for (int64_t i = 0; i < len; ++i) out[start + i] = f32_to_bf16(buf[i]);
  }
  return absl::OkStatus();
}

}  // namespace kiln
