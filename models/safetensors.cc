// safetensors: u64 header length | JSON header | raw tensor data. Validated before any read.
#include "models/safetensors.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "models/json_document.h"
#include "nlohmann/json.hpp"

namespace kiln {
namespace {

using nlohmann::json;

// The reference implementation refuses headers over 100 MB; so do we (before parsing).
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

absl::Status bad(const std::string& path, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
}

std::optional<DType> parse_st_dtype(const std::string& s) {
  if (s == "F32") return DType::kF32;
  if (s == "F16") return DType::kF16;
  if (s == "BF16") return DType::kBF16;
  return std::nullopt;
}

// Tensor data must start 8-byte aligned (the format pads the header with spaces to get there),
// so every element of every dtype is naturally aligned in the mapped file.
constexpr uint64_t kDataAlignment = 8;
// An index lists each tensor once: a few hundred kilobytes for the largest models.
constexpr uint64_t kMaxIndexBytes = 64ull << 20;

}  // namespace

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::open(const std::string& path) {
  auto mapped = MappedFile::open(path);
  if (!mapped.ok()) return mapped.status();
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  f->file_ = std::move(*mapped);
  const absl::Span<const uint8_t> data = f->file_->bytes();
  const uint64_t file_size = data.size();

  if (file_size < 8) {
    return bad(path, absl::StrCat("file of ", file_size,
                                  " bytes is too short for the 8-byte header length"));
  }
  uint64_t header_len;
  std::memcpy(&header_len, data.data(), 8);
  if (header_len > file_size - 8) {
    return bad(path, absl::StrFormat("header length %d lies past the end of the file (size %d)",
                                     header_len, file_size));
  }
  if (header_len > kMaxHeaderBytes) {
    return bad(path, absl::StrFormat("header length %d exceeds the %d-byte limit", header_len,
                                     kMaxHeaderBytes));
  }
  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = file_size - data_start;
  if (data_start % kDataAlignment != 0) {
    return bad(
        path, absl::StrFormat("header length %d leaves the tensor data at byte %d, which is not a "
                              "multiple of %d (the format pads the header with spaces to align the "
                              "data; re-save the file with the safetensors library)",
                              header_len, data_start, kDataAlignment));
  }
  std::string duplicate;
  absl::StatusOr<json> parsed = parse_json_document(
      std::string_view(reinterpret_cast<const char*>(data.data() + 8), header_len),
      absl::StrCat(path, ": header"), &duplicate);
  if (!parsed.ok()) return parsed.status();
  const json& header = *parsed;
  if (!header.is_object()) return bad(path, "header is not a JSON object");
  if (!duplicate.empty()) return bad(path, absl::StrCat("duplicate tensor '", duplicate, "'"));

  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    const std::string what = absl::StrCat("tensor '", name, "'");
    if (!entry.is_object()) return bad(path, absl::StrCat(what, ": entry is not an object"));
    SafetensorsTensorInfo t;
    t.name = name;

    auto dt = entry.find("dtype");
    if (dt == entry.end() || !dt->is_string()) {
      return bad(path, absl::StrCat(what, ": missing or non-string 'dtype'"));
    }
    std::optional<DType> dtype = parse_st_dtype(dt->get<std::string>());
    if (!dtype) {
      return bad(path, absl::StrCat(what, ": unsupported dtype '", dt->get<std::string>(),
                                    "' (kiln reads F32, F16, BF16)"));
    }
    t.dtype = *dtype;

    auto sh = entry.find("shape");
    if (sh == entry.end() || !sh->is_array()) {
      return bad(path, absl::StrCat(what, ": missing or non-array 'shape'"));
    }
    uint64_t elements = 1;
    for (const json& d : *sh) {
      if (!d.is_number_unsigned()) {
        return bad(path, absl::StrCat(what, ": shape ", sh->dump(),
                                      " has an entry that is not a non-negative integer"));
      }
      const uint64_t dim = d.get<uint64_t>();
      if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
          (dim != 0 &&
           elements > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / dim)) {
        return bad(path, absl::StrCat(what, ": shape ", sh->dump(), " overflows"));
      }
      elements *= dim;
      t.shape.push_back(static_cast<int64_t>(dim));
    }

    auto off = entry.find("data_offsets");
    if (off == entry.end() || !off->is_array() || off->size() != 2 ||
        !(*off)[0].is_number_unsigned() || !(*off)[1].is_number_unsigned()) {
      return bad(path,
                 absl::StrCat(what, ": 'data_offsets' is not a pair of non-negative integers"));
    }
    const uint64_t begin = (*off)[0].get<uint64_t>();
    const uint64_t end = (*off)[1].get<uint64_t>();
    if (begin > end) {
      return bad(path, absl::StrFormat("%s: data_offsets [%d, %d] are reversed (begin after end)",
                                       what, begin, end));
    }
    if (end > data_size) {
      return bad(path,
                 absl::StrFormat("%s data [offsets %d..%d] lies past the end of the data section "
                                 "(size %d; file size %d)",
                                 what, begin, end, data_size, file_size));
    }
    const uint64_t elem_bytes = static_cast<uint64_t>(block_bytes(t.dtype));
    if (begin % elem_bytes != 0) {
      return bad(path, absl::StrFormat("%s: data offset %d is not a multiple of its %s element "
                                       "size %d (misaligned data)",
                                       what, begin, dt->get<std::string>(), elem_bytes));
    }
    // elements < 2^63 and elem_bytes <= 4: compare via division to stay overflow-free.
    if ((end - begin) % elem_bytes != 0 || (end - begin) / elem_bytes != elements) {
      return bad(path,
                 absl::StrFormat("%s: data size %d bytes does not match dtype %s and shape %s "
                                 "(%d elements x %d bytes)",
                                 what, end - begin, dt->get<std::string>(), sh->dump(), elements,
                                 elem_bytes));
    }
    t.offset = data_start + begin;
    t.size = end - begin;
    f->by_name_.emplace(t.name, f->tensors_.size());
    f->tensors_.push_back(std::move(t));
  }
  // Two tensors sharing bytes would alias each other's weights: sort the ranges and refuse any
  // that starts before the previous one ends (empty tensors occupy nothing).
  std::vector<const SafetensorsTensorInfo*> by_offset;
  for (const SafetensorsTensorInfo& t : f->tensors_) {
    if (t.size > 0) by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(), [](const auto* a, const auto* b) {
    return a->offset != b->offset ? a->offset < b->offset : a->name < b->name;
  });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const SafetensorsTensorInfo& prev = *by_offset[i - 1];
    const SafetensorsTensorInfo& cur = *by_offset[i];
    if (cur.offset < prev.offset + prev.size) {
      return bad(
          path,
          absl::StrFormat("tensors '%s' [offsets %d..%d] and '%s' [offsets %d..%d] overlap",
                          prev.name, prev.offset - data_start, prev.offset - data_start + prev.size,
                          cur.name, cur.offset - data_start, cur.offset - data_start + cur.size));
    }
  }
  return f;
}

const SafetensorsTensorInfo* SafetensorsFile::find_tensor(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

absl::Span<const uint8_t> SafetensorsFile::tensor_bytes(const SafetensorsTensorInfo& info) const {
  return file_->bytes().subspan(info.offset, info.size);
}

absl::StatusOr<std::map<std::string, std::string>> read_safetensors_index(
    const std::string& index_path) {
  absl::StatusOr<std::string> text = read_small_file(index_path, kMaxIndexBytes);
  if (!text.ok()) return text.status();
  absl::StatusOr<json> parsed = parse_json_document(*text, index_path);
  if (!parsed.ok()) return parsed.status();
  const json& index = *parsed;
  if (!index.is_object()) return bad(index_path, "not a JSON object");
  auto wm = index.find("weight_map");
  if (wm == index.end() || !wm->is_object()) {
    return bad(index_path, "missing or non-object 'weight_map'");
  }
  std::map<std::string, std::string> out;
  for (const auto& [name, shard] : wm->items()) {
    if (!shard.is_string()) {
      return bad(index_path, absl::StrCat("weight_map['", name, "'] is not a string"));
    }
    const std::string file = shard.get<std::string>();
    if (file.empty() || file.find('/') != std::string::npos || file == "." || file == "..") {
      return bad(index_path, absl::StrCat("weight_map['", name, "'] = '", file,
                                          "' is not a plain file name in the model folder"));
    }
    out.emplace(name, file);
  }
  return out;
}

}  // namespace kiln
