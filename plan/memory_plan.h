// MemoryPlan: plan-memory's layout of every intermediate value in one activation arena, sized for
// the symbols' upper bounds. The runtime allocates `arena_bytes` once and binds each value at its
// offset.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kiln {

struct MemoryPlan {
  struct Buffer {
    std::string value;   // the value's printed name ("%42")
    int64_t offset = 0;  // bytes
    int64_t size = 0;    // bytes at the symbols' upper bounds
    int first_use = 0;   // node index that defines it
    int last_use = 0;    // last node index that reads it (or the graph's end for outputs)
    /// For a view that shares its source's bytes (reshape): the source buffer's value name;
    /// offset, size and live range are then the source's. Empty for buffers of their own.
    std::string alias_of;
  };
  std::vector<Buffer> buffers;
  int64_t arena_bytes = 0;
  int64_t lower_bound_bytes = 0;  // max over program points of the bytes live at that point
  int64_t alignment = 256;
};

}  // namespace kiln
