// PrefixCache: radix tree of cached KV pages with LRU eviction (see prefix_cache.h).
#include "runtime/kv/prefix_cache.h"

#include <algorithm>
#include <cassert>

#include "absl/strings/str_cat.h"

namespace kiln {

PrefixCache::PrefixCache(KvPageTables& kv) : kv_(kv) {}

PrefixCache::~PrefixCache() { clear(); }

absl::StatusOr<PrefixMatch> PrefixCache::acquire(absl::Span<const int32_t> tokens,
                                                 int64_t max_len) {
  const int64_t ps = kv_.page_size();
  max_len = std::clamp<int64_t>(max_len, 0, static_cast<int64_t>(tokens.size()));
  Node* node = &root_;
  int64_t matched = 0;
  SeqId source = -1;
  ++clock_;
  // Whole pages first: an exact child for each full page of the prompt.
  while (matched + ps <= max_len) {
    std::vector<int32_t> page(tokens.begin() + matched, tokens.begin() + matched + ps);
    auto it = node->children.find(page);
    if (it == node->children.end()) break;
    node = it->second.get();
    node->last_use = clock_;
    matched += ps;
    source = node->holder;
  }
  // Then part of one more page: the child sharing the longest run of leading tokens (a full or
  // a partial page). The request forks it and copies the page on its first write.
  const int64_t want = std::min(ps, max_len - matched);
  Node* best = nullptr;
  int64_t best_len = 0;
  for (auto& [key, child] : node->children) {
    int64_t n = 0;
    const int64_t limit = std::min<int64_t>(want, static_cast<int64_t>(key.size()));
    while (n < limit && key[n] == tokens[matched + n]) ++n;
    if (n > best_len) {
      best_len = n;
      best = child.get();
    }
  }
  if (best != nullptr) {
    best->last_use = clock_;
    matched += best_len;
    source = best->holder;
  }
  PrefixMatch m;
  if (source < 0) {
    m.seq = kv_.add_sequence();
    return m;
  }
  absl::StatusOr<SeqId> seq = kv_.fork(source);
  if (!seq.ok()) return seq.status();
  if (absl::Status s = kv_.truncate(*seq, matched); !s.ok()) return s;
  m.seq = *seq;
  m.cached_tokens = matched;
  return m;
}

void PrefixCache::record_lookup(int64_t max_len, int64_t cached_tokens) {
  stats_.lookups++;
  stats_.lookup_tokens += max_len;
  stats_.hit_tokens += cached_tokens;
}

absl::Status PrefixCache::insert(absl::Span<const int32_t> tokens, SeqId seq, int64_t length,
                                 bool include_partial_page) {
  absl::StatusOr<int64_t> seq_len = kv_.length(seq);
  if (!seq_len.ok()) return seq_len.status();
  if (length < 0 || length > *seq_len || length > static_cast<int64_t>(tokens.size())) {
    return absl::InvalidArgumentError(absl::StrCat("cannot cache ", length, " tokens of sequence ",
                                                   seq, ": it has ", *seq_len, " (", tokens.size(),
                                                   " token ids given)"));
  }
  const int64_t ps = kv_.page_size();
  ++clock_;
  Node* node = &root_;
  for (int64_t begin = 0; begin < length; begin += ps) {
    const int64_t end = std::min(begin + ps, length);
    if (end - begin < ps && !include_partial_page) break;
    std::vector<int32_t> page(tokens.begin() + begin, tokens.begin() + end);
    auto it = node->children.find(page);
    if (it == node->children.end()) {
      absl::StatusOr<SeqId> holder = kv_.fork(seq);
      if (!holder.ok()) return holder.status();
      if (absl::Status s = kv_.truncate(*holder, end); !s.ok()) return s;
      auto child = std::make_unique<Node>();
      child->tokens = page;
      child->holder = *holder;
      count_pages(*holder, +1);
      child->parent = node;
      it = node->children.emplace(std::move(page), std::move(child)).first;
      ++num_nodes_;
    }
    node = it->second.get();
    node->last_use = clock_;
    if (end - begin < ps) break;  // a partial page is always a leaf
  }
  return absl::OkStatus();
}

void PrefixCache::collect_leaves(Node* node, std::vector<Node*>& out) const {
  if (node != &root_ && node->children.empty()) out.push_back(node);
  for (auto& [key, child] : node->children) collect_leaves(child.get(), out);
}

bool PrefixCache::evictable(const Node* leaf) const {
  absl::StatusOr<absl::Span<const int32_t>> pages = kv_.page_table(leaf->holder);
  if (!pages.ok() || pages->empty()) return true;
  // The leaf's own page is its holder's last one: if the holder is its only user, no request is
  // reading it and freeing the holder returns it to the pool.
  return kv_.pool().ref_count(pages->back()) == 1;
}

int64_t PrefixCache::evict(int64_t pages) {
  const int64_t free_before = kv_.free_pages();
  while (kv_.free_pages() - free_before < pages) {
    std::vector<Node*> leaves;
    collect_leaves(&root_, leaves);
    Node* victim = nullptr;
    for (Node* leaf : leaves) {  // tree order breaks ties: deterministic
      if (!evictable(leaf)) continue;
      if (victim == nullptr || leaf->last_use < victim->last_use) victim = leaf;
    }
    if (victim == nullptr) break;
    Node* parent = victim->parent;
    const std::vector<int32_t> key = victim->tokens;  // erase destroys the node holding it
    drop_subtree(victim);
    parent->children.erase(key);
  }
  const int64_t freed = kv_.free_pages() - free_before;
  stats_.evicted_pages += freed;
  return freed;
}

void PrefixCache::drop_subtree(Node* node) {
  for (auto& [key, child] : node->children) drop_subtree(child.get());
  if (node->holder >= 0) {
    count_pages(node->holder, -1);
    absl::Status s = kv_.free(node->holder);
    assert(s.ok() && "a holder sequence lives as long as its node");
    (void)s;
    --num_nodes_;
  }
}

void PrefixCache::count_pages(SeqId holder, int32_t delta) {
  absl::StatusOr<absl::Span<const int32_t>> table = kv_.page_table(holder);
  if (!table.ok()) return;
  for (int32_t page : *table) {
    auto it = page_refs_.try_emplace(page, 0).first;
    it->second += delta;
    if (it->second <= 0) page_refs_.erase(it);
  }
}

void PrefixCache::clear() {
  drop_subtree(&root_);
  root_.children.clear();
}

}  // namespace kiln
