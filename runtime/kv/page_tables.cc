// KvPageTables: per-sequence page tables over a PagePool, with fork (copy-on-write) and truncate.
#include "runtime/kv/page_tables.h"

#include <algorithm>
#include <cassert>
#include <limits>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"

namespace kiln {
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

absl::Status unknown_sequence(SeqId seq) {
  return absl::InvalidArgumentError(absl::StrCat("unknown KV cache sequence id ", seq));
}

}  // namespace

absl::StatusOr<KvPageTables> KvPageTables::create(const KvPageTablesConfig& c) {
  auto positive = [](const char* name, int32_t v) -> absl::Status {
    if (v > 0) return absl::OkStatus();
    return absl::InvalidArgumentError(
        absl::StrCat("KV page tables: ", name, " must be positive, got ", v));
  };
  for (auto [name, v] :
       {std::pair{"page_size", c.page_size}, std::pair{"num_pages", c.num_pages}}) {
    if (absl::Status s = positive(name, v); !s.ok()) return s;
  }
  // slot_mapping and positions are int32 graph inputs.
  if (int64_t{c.num_pages} * c.page_size > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV page tables: num_pages * page_size = ", int64_t{c.num_pages} * c.page_size,
                     " slots do not fit the int32 slot_mapping; use fewer or smaller pages"));
  }
  return KvPageTables(c);
}

KvPageTables::KvPageTables(const KvPageTablesConfig& config)
    : config_(config), pool_(config.num_pages, config.page_size) {}

absl::StatusOr<const KvPageTables::Sequence*> KvPageTables::find(SeqId seq) const {
  auto it = seqs_.find(seq);
  if (it == seqs_.end()) return unknown_sequence(seq);
  return &it->second;
}

SeqId KvPageTables::add_sequence() {
  SeqId id = next_id_++;
  seqs_.emplace(id, Sequence{});
  return id;
}

absl::StatusOr<SeqId> KvPageTables::fork(SeqId seq) {
  auto parent = find(seq);
  if (!parent.ok()) return parent.status();
  Sequence child = **parent;
  for (int32_t page : child.pages) {
    absl::Status s = pool_.retain(page);
    assert(s.ok() && "a page in a page table is allocated");
    (void)s;
  }
  SeqId id = next_id_++;
  seqs_.emplace(id, std::move(child));
  return id;
}

void KvPageTables::release_pages(std::vector<int32_t>& pages, size_t keep) {
  for (size_t i = keep; i < pages.size(); ++i) {
    absl::Status s = pool_.release(pages[i]);
    assert(s.ok() && "a page in a page table is allocated");
    (void)s;
  }
  pages.resize(std::min(keep, pages.size()));
}

absl::Status KvPageTables::free(SeqId seq) {
  auto it = seqs_.find(seq);
  if (it == seqs_.end()) return unknown_sequence(seq);
  release_pages(it->second.pages, 0);
  seqs_.erase(it);
  return absl::OkStatus();
}

absl::Status KvPageTables::truncate(SeqId seq, int64_t new_len) {
  auto it = seqs_.find(seq);
  if (it == seqs_.end()) return unknown_sequence(seq);
  Sequence& s = it->second;
  if (new_len < 0 || new_len > s.length) {
    return absl::InvalidArgumentError(absl::StrCat("cannot truncate sequence ", seq, " to ",
                                                   new_len, " tokens: its length is ", s.length));
  }
  release_pages(s.pages, static_cast<size_t>(ceil_div(new_len, config_.page_size)));
  s.length = new_len;
  return absl::OkStatus();
}

int64_t KvPageTables::pages_for_append(const Sequence& s, int64_t n,
                                       std::map<int32_t, int32_t>& cow_released) const {
  if (n == 0) return 0;
  const int64_t ps = config_.page_size;
  int64_t pages = ceil_div(s.length + n, ps) - static_cast<int64_t>(s.pages.size());
  if (s.length % ps != 0) {  // appending writes into the partly filled last page
    int32_t last = s.pages.back();
    if (pool_.ref_count(last) - cow_released[last] > 1) {
      ++pages;
      ++cow_released[last];
    }
  }
  return pages;
}

absl::StatusOr<int64_t> KvPageTables::pages_needed(absl::Span<const KvReservation> batch) const {
  const int64_t capacity = int64_t{config_.num_pages} * config_.page_size;
  absl::flat_hash_set<SeqId> seen;
  std::map<int32_t, int32_t> cow_released;
  int64_t total = 0;
  for (const KvReservation& r : batch) {
    auto s = find(r.seq);
    if (!s.ok()) return s.status();
    if (!seen.insert(r.seq).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("sequence ", r.seq, " appears twice in one KV reservation batch"));
    }
    if (r.num_new_tokens < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot reserve ", r.num_new_tokens, " tokens for sequence ", r.seq));
    }
    if (r.num_new_tokens > capacity - (*s)->length) {
      // Would not fit even in an empty pool; also keeps the arithmetic below in range.
      return absl::ResourceExhaustedError(absl::StrCat(
          "KV cache is out of pages: sequence ", r.seq, " of length ", (*s)->length,
          " cannot grow by ", r.num_new_tokens, " tokens; the whole cache holds ", capacity,
          " tokens (", config_.num_pages, " pages of ", config_.page_size, ")"));
    }
    total += pages_for_append(**s, r.num_new_tokens, cow_released);
  }
  return total;
}

absl::Status KvPageTables::reserve(SeqId seq, int64_t num_new_tokens) {
  KvReservation r{seq, num_new_tokens};
  return reserve(absl::MakeConstSpan(&r, 1));
}

absl::Status KvPageTables::reserve(absl::Span<const KvReservation> batch) {
  // Check everything first, so that a failure leaves no trace (no partial allocation and no
  // copy-on-write that would un-share a page).
  auto needed = pages_needed(batch);
  if (!needed.ok()) return needed.status();
  if (*needed > pool_.free_pages()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "KV cache is out of pages: ", pool_.used_pages(), " in use of ", pool_.num_pages(),
        "; reserving ", batch.size() == 1 ? "this sequence" : "this batch", " needs ", *needed,
        " pages but only ", pool_.free_pages(),
        " are free; finish or preempt a sequence, or give the KV cache more memory"));
  }
  const int64_t ps = config_.page_size;
  for (const KvReservation& r : batch) {
    if (r.num_new_tokens == 0) continue;
    Sequence& s = seqs_.at(r.seq);
    if (s.length % ps != 0 && pool_.ref_count(s.pages.back()) > 1) {
      absl::StatusOr<int32_t> copy = pool_.allocate();
      if (!copy.ok())
        return absl::InternalError("KV page count check was wrong: " +
                                   std::string(copy.status().message()));
      pending_copies_.push_back({s.pages.back(), *copy});
      absl::Status released = pool_.release(s.pages.back());
      assert(released.ok());
      (void)released;
      s.pages.back() = *copy;
    }
    while (static_cast<int64_t>(s.pages.size()) < ceil_div(s.length + r.num_new_tokens, ps)) {
      absl::StatusOr<int32_t> page = pool_.allocate();
      if (!page.ok())
        return absl::InternalError("KV page count check was wrong: " +
                                   std::string(page.status().message()));
      s.pages.push_back(*page);
    }
    s.length += r.num_new_tokens;
  }
  return absl::OkStatus();
}

std::vector<SeqId> KvPageTables::sequences() const {
  std::vector<SeqId> ids;
  ids.reserve(seqs_.size());
  for (const auto& [id, s] : seqs_) ids.push_back(id);
  return ids;
}

absl::StatusOr<int64_t> KvPageTables::length(SeqId seq) const {
  auto s = find(seq);
  if (!s.ok()) return s.status();
  return (*s)->length;
}

absl::StatusOr<absl::Span<const int32_t>> KvPageTables::page_table(SeqId seq) const {
  auto s = find(seq);
  if (!s.ok()) return s.status();
  return absl::MakeConstSpan((*s)->pages);
}

absl::StatusOr<int32_t> KvPageTables::slot(SeqId seq, int64_t position) const {
  auto s = find(seq);
  if (!s.ok()) return s.status();
  if (position < 0 || position >= (*s)->length) {
    return absl::InvalidArgumentError(absl::StrCat("position ", position, " is outside sequence ",
                                                   seq, " of length ", (*s)->length));
  }
  const int32_t ps = config_.page_size;
  return (*s)->pages[position / ps] * ps + static_cast<int32_t>(position % ps);
}

}  // namespace kiln
