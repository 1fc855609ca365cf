// Dims, shapes and symbol tables.
#include "ir/shape.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "ir/checked_arithmetic.h"

namespace kiln {

std::string Dim::to_string() const {
  if (!is_symbolic()) return absl::StrCat(value);
  if (value == 0) return symbol;
  return value > 0 ? absl::StrCat(symbol, "+", value) : absl::StrCat(symbol, value);
}

std::string shape_to_string(const Shape& shape) {
  return absl::StrCat(
      "[",
      absl::StrJoin(shape, ",", [](std::string* out, const Dim& d) { out->append(d.to_string()); }),
      "]");
}

absl::Status SymbolTable::add(const Symbol& symbol) {
  if (find(symbol.name) != nullptr) {
    return absl::AlreadyExistsError(absl::StrCat("symbol ", symbol.name, " is declared twice"));
  }
  if (symbol.upper_bound <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("symbol ", symbol.name, " needs a positive upper bound"));
  }
  index_.emplace(symbol.name, symbols_.size());
  symbols_.push_back(symbol);
  return absl::OkStatus();
}

const Symbol* SymbolTable::find(std::string_view name) const {
  auto it = index_.find(absl::string_view(name.data(), name.size()));
  return it == index_.end() ? nullptr : &symbols_[it->second];
}

absl::StatusOr<int64_t> SymbolTable::upper_bound(const Dim& dim) const {
  if (!dim.is_symbolic()) return dim.value;
  const Symbol* s = find(dim.symbol);
  if (s == nullptr) return absl::NotFoundError(absl::StrCat("unknown symbol ", dim.symbol));
  std::optional<int64_t> bound = checked_add(s->upper_bound, dim.value);
  if (!bound)
    return absl::InvalidArgumentError(absl::StrCat("dim ", dim.to_string(), " overflows"));
  return *bound;
}

absl::StatusOr<int64_t> SymbolTable::max_elements(const Shape& shape) const {
  int64_t n = 1;
  for (const Dim& d : shape) {
    absl::StatusOr<int64_t> b = upper_bound(d);
    if (!b.ok()) return b.status();
    std::optional<int64_t> next = checked_mul(n, *b);
    if (!next) {
      return absl::InvalidArgumentError(absl::StrCat(
          "shape ", shape_to_string(shape), " has more than 2^63 elements at its upper bounds"));
    }
    n = *next;
  }
  return n;
}

std::optional<int64_t> SymbolBindings::get(std::string_view name) const {
  for (const auto& [n, v] : values) {
    if (n == name) return v;
  }
  return std::nullopt;
}

void SymbolBindings::set(const std::string& name, int64_t value) {
  for (auto& [n, v] : values) {
    if (n == name) {
      v = value;
      return;
    }
  }
  values.emplace_back(name, value);
}

absl::StatusOr<int64_t> SymbolBindings::resolve(const Dim& dim) const {
  if (!dim.is_symbolic()) return dim.value;
  std::optional<int64_t> v = get(dim.symbol);
  if (!v) return absl::NotFoundError(absl::StrCat("symbol ", dim.symbol, " is not bound"));
  return *v + dim.value;
}

absl::StatusOr<std::vector<int64_t>> SymbolBindings::resolve(const Shape& shape) const {
  std::vector<int64_t> out;
  out.reserve(shape.size());
  for (const Dim& d : shape) {
    absl::StatusOr<int64_t> v = resolve(d);
    if (!v.ok()) return v.status();
    out.push_back(*v);
  }
  return out;
}

}  // namespace kiln
