// safetensors: u64 header length | JSON header | raw tensor data. Validated before any read.
#include "models/safetensors.h"

#include <cstring>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
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

// Parses JSON without exceptions, reporting a repeated key among the top-level object's keys
// (nlohmann would otherwise keep the last one silently).
json parse_json_checking_duplicates(absl::string_view text, std::string* duplicate) {
  std::set<std::string> seen;
  json::parser_callback_t cb = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::key && depth == 1 && parsed.is_string()) {
      const auto& k = parsed.get_ref<const std::string&>();
      if (!seen.insert(k).second && duplicate->empty()) *duplicate = k;
    }
    return true;
  };
  return json::parse(text.begin(), text.end(), cb, /*allow_exceptions=*/false);
}

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
  std::string duplicate;
  const json header = parse_json_checking_duplicates(
      absl::string_view(reinterpret_cast<const char*>(data.data() + 8), header_len), &duplicate);
  if (header.is_discarded()) return bad(path, "header is not valid JSON");
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
    if (begin > end || end > data_size) {
      return bad(path,
                 absl::StrFormat("%s data [offsets %d..%d] lies past the end of the data section "
                                 "(size %d; file size %d)",
                                 what, begin, end, data_size, file_size));
    }
    const uint64_t elem_bytes = static_cast<uint64_t>(block_bytes(t.dtype));
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
  std::ifstream in(index_path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(index_path, ": cannot open"));
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  const json index = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (index.is_discarded() || !index.is_object()) {
    return bad(index_path, "not a valid JSON object");
  }
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
