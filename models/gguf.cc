// GGUF reader: every count, length and offset is checked against the file before it is used.
#include "models/gguf.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kiln {
namespace {

constexpr uint32_t kTypeUint8 = 0, kTypeInt8 = 1, kTypeUint16 = 2, kTypeInt16 = 3, kTypeUint32 = 4,
                   kTypeInt32 = 5, kTypeFloat32 = 6, kTypeBool = 7, kTypeString = 8, kTypeArray = 9,
                   kTypeUint64 = 10, kTypeInt64 = 11, kTypeFloat64 = 12;
constexpr int kMaxArrayDepth = 8;  // nested arrays beyond this are surely corrupt
constexpr int kMaxDims = 4;        // GGML_MAX_DIMS
constexpr uint64_t kDefaultAlignment = 32;
// A metadata value is held as a GgufValue of ~48 bytes whatever its encoded size, so a 1-byte
// element costs 48x its file bytes once read. Real files hold at most a few hundred thousand
// elements per array (vocabularies, merges, token types); these caps keep a hostile file's
// metadata to a few hundred MB however large the file.
constexpr uint64_t kMaxArrayElements = uint64_t{1} << 22;
constexpr uint64_t kMaxMetadataElements = uint64_t{1} << 23;

absl::string_view type_name(uint32_t t) {
  static constexpr absl::string_view kNames[] = {"uint8",  "int8",    "uint16", "int16",  "uint32",
                                                 "int32",  "float32", "bool",   "string", "array",
                                                 "uint64", "int64",   "float64"};
  return t <= kTypeFloat64 ? kNames[t] : "unknown";
}

// Smallest encoded size of a value of type t; bounds array counts before any allocation.
uint64_t min_encoded_size(uint32_t t) {
  switch (t) {
    case kTypeUint8:
    case kTypeInt8:
    case kTypeBool: return 1;
    case kTypeUint16:
    case kTypeInt16: return 2;
    case kTypeUint32:
    case kTypeInt32:
    case kTypeFloat32: return 4;
    case kTypeUint64:
    case kTypeInt64:
    case kTypeFloat64: return 8;
    case kTypeString: return 8;  // the length prefix
    case kTypeArray: return 12;  // element type + count
    default: return 1;
  }
}

// GGML tensor type codes kiln reads (ggml.h `enum ggml_type`).
std::optional<DType> ggml_type_to_dtype(uint32_t t) {
  switch (t) {
    case 0: return DType::kF32;
    case 1: return DType::kF16;
    case 2: return DType::kQ4_0;
    case 3: return DType::kQ4_1;
    case 8: return DType::kQ8_0;
    case 12: return DType::kQ4_K;
    case 14: return DType::kQ6_K;
    case 30: return DType::kBF16;
    default: return std::nullopt;
  }
}

// A bounds-checked little-endian cursor over the mapped file. Every read says what it was
// reading so errors name the field.
class Cursor {
 public:
  Cursor(const std::string& path, absl::Span<const uint8_t> data) : path_(path), data_(data) {}

  uint64_t pos() const { return pos_; }
  uint64_t elements_read = 0;  // metadata array elements so far (bounded by kMaxMetadataElements)
  uint64_t remaining() const { return data_.size() - pos_; }

  absl::Status error(absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": ", what));
  }

  template <typename T>
  absl::Status read(T* out, absl::string_view field) {
    if (remaining() < sizeof(T)) {
      return error(absl::StrFormat("%s at offset %d: needs %d bytes, file ends at %d", field, pos_,
                                   sizeof(T), data_.size()));
    }
    std::memcpy(out, data_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return absl::OkStatus();
  }

  absl::Status read_string(std::string* out, absl::string_view field) {
    uint64_t len = 0;
    if (auto s = read(&len, absl::StrCat(field, " length")); !s.ok()) return s;
    if (len > remaining()) {
      return error(
          absl::StrFormat("%s at offset %d: string length %d lies past the end of the "
                          "file (size %d)",
                          field, pos_ - 8, len, data_.size()));
    }
    out->assign(reinterpret_cast<const char*>(data_.data() + pos_), len);
    pos_ += len;
    return absl::OkStatus();
  }

 private:
  const std::string& path_;
  absl::Span<const uint8_t> data_;
  uint64_t pos_ = 0;
};

#define KILN_RETURN_IF_ERROR(expr) \
  do {                             \
    absl::Status _s = (expr);      \
    if (!_s.ok()) return _s;       \
  } while (0)

template <typename T, typename Wide>
absl::Status read_scalar(Cursor& c, GgufValue* v, absl::string_view field) {
  T x;
  KILN_RETURN_IF_ERROR(c.read(&x, field));
  v->value = static_cast<Wide>(x);
  return absl::OkStatus();
}

absl::Status read_value(Cursor& c, uint32_t type, GgufValue* v, const std::string& field,
                        int depth) {
  v->stored_type = type;
  switch (type) {
    case kTypeUint8: return read_scalar<uint8_t, uint64_t>(c, v, field);
    case kTypeInt8: return read_scalar<int8_t, int64_t>(c, v, field);
    case kTypeUint16: return read_scalar<uint16_t, uint64_t>(c, v, field);
    case kTypeInt16: return read_scalar<int16_t, int64_t>(c, v, field);
    case kTypeUint32: return read_scalar<uint32_t, uint64_t>(c, v, field);
    case kTypeInt32: return read_scalar<int32_t, int64_t>(c, v, field);
    case kTypeUint64: return read_scalar<uint64_t, uint64_t>(c, v, field);
    case kTypeInt64: return read_scalar<int64_t, int64_t>(c, v, field);
    case kTypeFloat32: return read_scalar<float, double>(c, v, field);
    case kTypeFloat64: return read_scalar<double, double>(c, v, field);
    case kTypeBool: {
      uint8_t b;
      KILN_RETURN_IF_ERROR(c.read(&b, field));
      if (b > 1) return c.error(absl::StrFormat("%s: invalid bool value %d", field, b));
      v->value = b != 0;
      return absl::OkStatus();
    }
    case kTypeString: {
      std::string s;
      KILN_RETURN_IF_ERROR(c.read_string(&s, field));
      v->value = std::move(s);
      return absl::OkStatus();
    }
    case kTypeArray: {
      if (depth >= kMaxArrayDepth) {
        return c.error(absl::StrCat(field, ": arrays nested more than ", kMaxArrayDepth, " deep"));
      }
      uint32_t elem_type = 0;
      uint64_t count = 0;
      KILN_RETURN_IF_ERROR(c.read(&elem_type, absl::StrCat(field, " array element type")));
      if (elem_type > kTypeFloat64) {
        return c.error(absl::StrFormat("%s: invalid array element type code %d", field, elem_type));
      }
      KILN_RETURN_IF_ERROR(c.read(&count, absl::StrCat(field, " array count")));
      // Division, not multiplication: count * size could overflow.
      if (count > c.remaining() / min_encoded_size(elem_type)) {
        return c.error(absl::StrFormat(
            "%s: array of %d %s elements cannot fit in the %d bytes left in the file", field, count,
            type_name(elem_type), c.remaining()));
      }
      if (count > kMaxArrayElements) {
        return c.error(absl::StrFormat("%s: array of %d elements is more than the %d kiln reads",
                                       field, count, kMaxArrayElements));
      }
      if (c.elements_read += count; c.elements_read > kMaxMetadataElements) {
        return c.error(absl::StrFormat("%s: the metadata arrays hold more than %d elements in all",
                                       field, kMaxMetadataElements));
      }
      GgufValue::Array arr(count);
      for (uint64_t i = 0; i < count; ++i) {
        KILN_RETURN_IF_ERROR(
            read_value(c, elem_type, &arr[i], absl::StrCat(field, "[", i, "]"), depth + 1));
      }
      v->value = std::move(arr);
      v->stored_type = kTypeArray;
      return absl::OkStatus();
    }
    default: return c.error(absl::StrFormat("%s: invalid metadata type code %d", field, type));
  }
}

std::string kind_of(const GgufValue& v) {
  if (v.stored_type == kTypeArray) return "an array";
  return absl::StrCat("a ", type_name(v.stored_type));
}

}  // namespace

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::open(const std::string& path) {
  auto mapped = MappedFile::open(path);
  if (!mapped.ok()) return mapped.status();
  std::unique_ptr<GgufFile> g(new GgufFile());
  g->path_ = path;
  g->file_ = std::move(*mapped);
  const absl::Span<const uint8_t> data = g->file_->bytes();
  const uint64_t file_size = data.size();
  Cursor c(g->path_, data);

  char magic[4];
  KILN_RETURN_IF_ERROR(c.read(&magic, "magic"));
  if (std::memcmp(magic, "GGUF", 4) != 0) {
    return c.error("bad magic: not a GGUF file (expected 'GGUF' at offset 0)");
  }
  KILN_RETURN_IF_ERROR(c.read(&g->version_, "version"));
  if (g->version_ != 2 && g->version_ != 3) {
    return c.error(
        absl::StrCat("unsupported GGUF version ", g->version_, " (kiln reads versions 2 and 3)"));
  }
  uint64_t n_tensors = 0, n_kv = 0;
  KILN_RETURN_IF_ERROR(c.read(&n_tensors, "tensor_count"));
  KILN_RETURN_IF_ERROR(c.read(&n_kv, "metadata_kv_count"));
  // Each metadata entry needs >= 13 bytes (key length, type, 1-byte value); each tensor info
  // >= 24 (name length, n_dims, type, offset).
  if (n_kv > c.remaining() / 13) {
    return c.error(
        absl::StrFormat("metadata_kv_count %d cannot fit in the file (size %d)", n_kv, file_size));
  }
  if (n_tensors > c.remaining() / 24) {
    return c.error(
        absl::StrFormat("tensor_count %d cannot fit in the file (size %d)", n_tensors, file_size));
  }

  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key;
    KILN_RETURN_IF_ERROR(c.read_string(&key, absl::StrCat("metadata[", i, "] key")));
    uint32_t type;
    KILN_RETURN_IF_ERROR(c.read(&type, absl::StrCat("metadata '", key, "' type")));
    if (type > kTypeFloat64) {
      return c.error(absl::StrFormat("metadata '%s': invalid metadata type code %d", key, type));
    }
    GgufValue v;
    KILN_RETURN_IF_ERROR(read_value(c, type, &v, absl::StrCat("metadata '", key, "'"), 0));
    if (!g->metadata_.emplace(key, std::move(v)).second) {
      return c.error(absl::StrCat("duplicate metadata key '", key, "'"));
    }
  }

  uint64_t alignment = kDefaultAlignment;
  if (auto it = g->metadata_.find("general.alignment"); it != g->metadata_.end()) {
    const uint64_t* a = std::get_if<uint64_t>(&it->second.value);
    if (a == nullptr || *a == 0 || (*a & (*a - 1)) != 0) {
      return c.error("metadata 'general.alignment' must be an unsigned power of two");
    }
    alignment = *a;
  }

  std::set<std::string> names;
  // Grown as entries are read, not sized from the declared count: each entry's record is a few
  // times larger than its minimum 24 bytes in the file.
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo& t = g->tensors_.emplace_back();
    KILN_RETURN_IF_ERROR(c.read_string(&t.name, absl::StrCat("tensor[", i, "] name")));
    const std::string what = absl::StrCat("tensor '", t.name, "'");
    if (t.name.empty()) return c.error(absl::StrCat("tensor[", i, "] has an empty name"));
    uint32_t n_dims;
    KILN_RETURN_IF_ERROR(c.read(&n_dims, absl::StrCat(what, " n_dims")));
    if (n_dims == 0 || n_dims > kMaxDims) {
      return c.error(absl::StrCat(what, ": n_dims ", n_dims, " is not in 1..", kMaxDims));
    }
    std::vector<int64_t> ne(n_dims);
    uint64_t elements = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      uint64_t dim;
      KILN_RETURN_IF_ERROR(c.read(&dim, absl::StrCat(what, " ne[", d, "]")));
      if (dim == 0 || dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
          elements > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / dim) {
        return c.error(absl::StrCat(what, ": dimension ne[", d, "] = ", dim,
                                    " is zero or makes the element count overflow"));
      }
      ne[d] = static_cast<int64_t>(dim);
      elements *= dim;
    }
    uint32_t type;
    KILN_RETURN_IF_ERROR(c.read(&type, absl::StrCat(what, " type")));
    std::optional<DType> dtype = ggml_type_to_dtype(type);
    if (!dtype) {
      return c.error(absl::StrCat(what, ": unsupported tensor type code ", type,
                                  " (kiln reads F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K)"));
    }
    t.dtype = *dtype;
    KILN_RETURN_IF_ERROR(c.read(&t.offset, absl::StrCat(what, " offset")));
    const uint64_t be = static_cast<uint64_t>(block_elements(t.dtype));
    if (static_cast<uint64_t>(ne[0]) % be != 0) {
      return c.error(absl::StrCat(what, ": innermost dimension ", ne[0],
                                  " is not a multiple of the ", dtype_name(t.dtype), " block size ",
                                  be));
    }
    // elements < 2^63 and block_bytes <= 210 < block_elements * 8, so no overflow here.
    t.size = elements / be * static_cast<uint64_t>(block_bytes(t.dtype));
    t.shape.assign(ne.rbegin(), ne.rend());
    if (t.offset % alignment != 0) {
      return c.error(absl::StrCat(what, ": data offset ", t.offset,
                                  " is not a multiple of the alignment ", alignment));
    }
    if (!names.insert(t.name).second) {
      return c.error(absl::StrCat("duplicate tensor name '", t.name, "'"));
    }
  }

  const uint64_t header_end = c.pos();
  const uint64_t data_start = (header_end + alignment - 1) / alignment * alignment;
  for (GgufTensorInfo& t : g->tensors_) {
    // Compare without forming sums that could overflow.
    const bool in_file = data_start <= file_size && t.offset <= file_size - data_start &&
                         t.size <= file_size - data_start - t.offset;
    if (!in_file) {
      return c.error(absl::StrFormat(
          "tensor '%s' data [offset %d, size %d] lies past the end of the file (size %d)", t.name,
          t.offset, t.size, file_size));
    }
    t.offset += data_start;
  }
  // Tensors sharing bytes would alias each other's weights (llama.cpp lays them out back to back).
  std::vector<const GgufTensorInfo*> by_offset;
  for (const GgufTensorInfo& t : g->tensors_) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const auto* a, const auto* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const GgufTensorInfo& prev = *by_offset[i - 1];
    const GgufTensorInfo& cur = *by_offset[i];
    if (cur.offset < prev.offset + prev.size) {  // both lie inside the file: no overflow
      return c.error(absl::StrFormat(
          "tensors '%s' [offset %d, size %d] and '%s' [offset %d, size %d] overlap", prev.name,
          prev.offset - data_start, prev.size, cur.name, cur.offset - data_start, cur.size));
    }
  }
  return g;
}

uint32_t GgufFile::version() const { return version_; }
const std::map<std::string, GgufValue>& GgufFile::metadata() const { return metadata_; }
const std::vector<GgufTensorInfo>& GgufFile::tensors() const { return tensors_; }
const std::string& GgufFile::path() const { return path_; }
bool GgufFile::has(const std::string& key) const { return metadata_.count(key) != 0; }

const GgufTensorInfo* GgufFile::find_tensor(const std::string& name) const {
  for (const GgufTensorInfo& t : tensors_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

absl::Span<const uint8_t> GgufFile::tensor_bytes(const GgufTensorInfo& info) const {
  return file_->bytes().subspan(info.offset, info.size);
}

namespace {

absl::Status wrong_type(const std::string& path, const std::string& key, const GgufValue& v,
                        absl::string_view expected) {
  return absl::InvalidArgumentError(
      absl::StrCat(path, ": metadata key '", key, "' is ", kind_of(v), ", expected ", expected));
}

std::optional<int64_t> as_int(const GgufValue& v) {
  if (auto* i = std::get_if<int64_t>(&v.value)) return *i;
  if (auto* u = std::get_if<uint64_t>(&v.value)) {
    if (*u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return static_cast<int64_t>(*u);
    }
  }
  return std::nullopt;
}

std::optional<double> as_float(const GgufValue& v) {
  if (auto* d = std::get_if<double>(&v.value)) return *d;
  if (auto* i = std::get_if<int64_t>(&v.value)) return static_cast<double>(*i);
  if (auto* u = std::get_if<uint64_t>(&v.value)) return static_cast<double>(*u);
  return std::nullopt;
}

}  // namespace

#define KILN_FIND_KEY(key)                                                                   \
  auto it = metadata_.find(key);                                                             \
  if (it == metadata_.end()) {                                                               \
    return absl::NotFoundError(absl::StrCat(path_, ": metadata key '", key, "' not found")); \
  }                                                                                          \
  const GgufValue& v = it->second

absl::StatusOr<int64_t> GgufFile::get_int(const std::string& key) const {
  KILN_FIND_KEY(key);
  if (auto i = as_int(v)) return *i;
  return wrong_type(path_, key, v, "an integer");
}

absl::StatusOr<double> GgufFile::get_float(const std::string& key) const {
  KILN_FIND_KEY(key);
  if (auto d = as_float(v)) return *d;
  return wrong_type(path_, key, v, "a number");
}

absl::StatusOr<std::string> GgufFile::get_string(const std::string& key) const {
  KILN_FIND_KEY(key);
  if (auto* s = std::get_if<std::string>(&v.value)) return *s;
  return wrong_type(path_, key, v, "a string");
}

absl::StatusOr<bool> GgufFile::get_bool(const std::string& key) const {
  KILN_FIND_KEY(key);
  if (auto* b = std::get_if<bool>(&v.value)) return *b;
  return wrong_type(path_, key, v, "a bool");
}

absl::StatusOr<std::vector<std::string>> GgufFile::get_string_array(const std::string& key) const {
  KILN_FIND_KEY(key);
  auto* arr = std::get_if<GgufValue::Array>(&v.value);
  if (arr == nullptr) return wrong_type(path_, key, v, "an array of strings");
  std::vector<std::string> out;
  out.reserve(arr->size());
  for (const GgufValue& e : *arr) {
    auto* s = std::get_if<std::string>(&e.value);
    if (s == nullptr) return wrong_type(path_, key, e, "an array of strings");
    out.push_back(*s);
  }
  return out;
}

absl::StatusOr<std::vector<double>> GgufFile::get_float_array(const std::string& key) const {
  KILN_FIND_KEY(key);
  auto* arr = std::get_if<GgufValue::Array>(&v.value);
  if (arr == nullptr) return wrong_type(path_, key, v, "an array of numbers");
  std::vector<double> out;
  out.reserve(arr->size());
  for (const GgufValue& e : *arr) {
    auto d = as_float(e);
    if (!d) return wrong_type(path_, key, e, "an array of numbers");
    out.push_back(*d);
  }
  return out;
}

absl::StatusOr<std::vector<int64_t>> GgufFile::get_int_array(const std::string& key) const {
  KILN_FIND_KEY(key);
  auto* arr = std::get_if<GgufValue::Array>(&v.value);
  if (arr == nullptr) return wrong_type(path_, key, v, "an array of integers");
  std::vector<int64_t> out;
  out.reserve(arr->size());
  for (const GgufValue& e : *arr) {
    auto i = as_int(e);
    if (!i) return wrong_type(path_, key, e, "an array of integers");
    out.push_back(*i);
  }
  return out;
}

#undef KILN_FIND_KEY
#undef KILN_RETURN_IF_ERROR

}  // namespace kiln
