// PageCopy: a copy-on-write of one KV page that the page tables ask the backend (which owns the KV
// storage) to perform before the next step writes K/V.
#pragma once

#include <cstdint>

namespace kiln {

/// Copy every layer's K and V rows of page `src` to page `dst`.
struct PageCopy {
  int32_t src = 0;
  int32_t dst = 0;
  bool operator==(const PageCopy&) const = default;
};

}  // namespace kiln
