// Overflow-checked size arithmetic: the one place where byte and element counts that come from
// files (shapes, symbol bounds, declared counts) are multiplied or added. nullopt means the exact
// result does not fit, and callers turn that into an error naming what overflowed.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>

namespace kiln {

/// a * b, or nullopt when the product does not fit in int64 (either operand may be negative).
constexpr std::optional<int64_t> checked_mul(int64_t a, int64_t b) {
  int64_t out = 0;
  if (__builtin_mul_overflow(a, b, &out)) return std::nullopt;
  return out;
}

/// a + b, or nullopt on overflow.
constexpr std::optional<int64_t> checked_add(int64_t a, int64_t b) {
  int64_t out = 0;
  if (__builtin_add_overflow(a, b, &out)) return std::nullopt;
  return out;
}

/// The product of `factors` (1 for none), or nullopt as soon as a partial product overflows.
constexpr std::optional<int64_t> checked_product(std::initializer_list<int64_t> factors) {
  int64_t out = 1;
  for (int64_t f : factors) {
    std::optional<int64_t> next = checked_mul(out, f);
    if (!next) return std::nullopt;
    out = *next;
  }
  return out;
}

/// n rounded up to a multiple of `alignment` (> 0), or nullopt when that does not fit.
constexpr std::optional<int64_t> checked_align_up(int64_t n, int64_t alignment) {
  if (alignment <= 0) return std::nullopt;
  std::optional<int64_t> padded = checked_add(n, alignment - 1);
  if (!padded) return std::nullopt;
  return *padded / alignment * alignment;
}

}  // namespace kiln
