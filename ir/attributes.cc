// Attribute printing and typed access.
#include "ir/attributes.h"

#include <charconv>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace kiln {
namespace {

// Shortest text that parses back to the same double, always recognisable as a float.
std::string float_to_string(double v) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  std::string s(buf, end);
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";  // "n" covers inf/nan
  return s;
}

std::string escape(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out + "\"";
}

const char* kind_name(const Attribute& a) {
  switch (a.index()) {
    case 0: return "an int";
    case 1: return "a float";
    case 2: return "a string";
    case 3: return "an int list";
    case 4: return "a dtype";
  }
  return "?";
}

}  // namespace

std::string attribute_to_string(const Attribute& attr) {
  struct Visitor {
    std::string operator()(int64_t v) const { return absl::StrCat(v); }
    std::string operator()(double v) const { return float_to_string(v); }
    std::string operator()(const std::string& v) const { return escape(v); }
    std::string operator()(const IntList& v) const {
      return absl::StrCat("[", absl::StrJoin(v, ", "), "]");
    }
    std::string operator()(DType v) const { return std::string(dtype_name(v)); }
  };
  return std::visit(Visitor{}, attr);
}

#define KILN_ATTR_GET(NAME, TYPE, WANT)                                                         \
  absl::StatusOr<TYPE> Attributes::NAME(const std::string& name) const {                        \
    auto it = values_.find(name);                                                               \
    if (it == values_.end())                                                                    \
      return absl::NotFoundError(absl::StrCat("missing attribute '", name, "'"));               \
    if (const TYPE* v = std::get_if<TYPE>(&it->second)) return *v;                              \
    return absl::InvalidArgumentError(                                                          \
        absl::StrCat("attribute '", name, "' is ", kind_name(it->second), ", expected " WANT)); \
  }

KILN_ATTR_GET(get_int, int64_t, "an int")
KILN_ATTR_GET(get_string, std::string, "a string")
KILN_ATTR_GET(get_int_list, IntList, "an int list")
KILN_ATTR_GET(get_dtype, DType, "a dtype")
#undef KILN_ATTR_GET

absl::StatusOr<double> Attributes::get_float(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end())
    return absl::NotFoundError(absl::StrCat("missing attribute '", name, "'"));
  if (const double* v = std::get_if<double>(&it->second)) return *v;
  if (const int64_t* v = std::get_if<int64_t>(&it->second)) return static_cast<double>(*v);
  return absl::InvalidArgumentError(
      absl::StrCat("attribute '", name, "' is ", kind_name(it->second), ", expected a float"));
}

int64_t Attributes::int_or(const std::string& name, int64_t fallback) const {
  absl::StatusOr<int64_t> v = get_int(name);
  return v.ok() ? *v : fallback;
}
double Attributes::float_or(const std::string& name, double fallback) const {
  absl::StatusOr<double> v = get_float(name);
  return v.ok() ? *v : fallback;
}
std::string Attributes::string_or(const std::string& name, const std::string& fallback) const {
  absl::StatusOr<std::string> v = get_string(name);
  return v.ok() ? *v : fallback;
}

}  // namespace kiln
