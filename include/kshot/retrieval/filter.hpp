/**
 * @file kshot/retrieval/filter.hpp
 * @brief What a search may return: an allow-bitset over external item ids (category, in stock), per-query
 * exclusion lists (items a user already has) and the SearchOptions that carry them with an optional predicate.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_RETRIEVAL_FILTER_HPP
#define KSHOT_RETRIEVAL_FILTER_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/types.hpp"

#include <algorithm>
#include <cstdint>
#include <functional>
#include <vector>

namespace kshot {

/// External item id of a retrieval index: any value >= 0 (-1 marks an empty result slot).
using ItemId = std::int64_t;
/// Column vector of item ids.
using IdVector = Eigen::Matrix<ItemId, Eigen::Dynamic, 1>;
/// Read-only view of item ids: an IdVector, its segments and `Eigen::Map`s of a `std::vector<ItemId>` bind
/// without a copy.
using ConstIdRef = Eigen::Ref<const IdVector>;
/// Row-major matrix of item ids (one row per query).
using IdMatrix = Eigen::Matrix<ItemId, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/**
 * @brief A set of item ids in [0, universe) as one bit per id: the shape of a category or in-stock filter.
 *
 * Build one bitset per category and one for the stock once, combine them with `&=` / `|=` when they change,
 * and pass a pointer through SearchOptions::allowed. Ids outside [0, universe) test false.
 *
 * @note Memory: universe / 8 bytes. test() is a shift and a mask; nothing allocates after construction except
 * resize() to a larger universe.
 */
class IdBitset {
 public:
  /// An empty set over an empty universe.
  IdBitset() = default;

  /**
   * @brief An empty set over ids [0, universe).
   * @param universe one past the largest id the set can hold.
   * @throws std::invalid_argument if universe < 0.
   */
  explicit IdBitset(ItemId universe) { resize(universe); }

  /**
   * @brief The set of the listed ids over [0, universe).
   * @param universe one past the largest id the set can hold.
   * @param ids the members (repeats are harmless).
   * @throws std::invalid_argument if universe < 0 or an id is outside [0, universe).
   */
  IdBitset(ItemId universe, ConstIdRef ids) {
    resize(universe);
    for (Index i = 0; i < ids.size(); ++i) set(ids[i]);
  }

  /**
   * @brief Changes the universe to [0, universe); ids that stay keep their bit, new ids start clear.
   * @throws std::invalid_argument if universe < 0.
   */
  void resize(ItemId universe) {
    KSHOT_CHECK(universe >= 0, "kshot::IdBitset::resize()", detail::cat("universe must be >= 0, got ", universe));
    universe_ = universe;
    words_.resize(static_cast<std::size_t>((universe + 63) / 64), 0);
    trim();
  }

  /// One past the largest id the set can hold.
  ItemId universe() const noexcept { return universe_; }

  /**
   * @brief Adds (value true) or removes (false) `id`.
   * @throws std::invalid_argument if id is outside [0, universe()).
   */
  void set(ItemId id, bool value = true) {
    KSHOT_CHECK(id >= 0 && id < universe_, "kshot::IdBitset::set()",
                detail::cat("id ", id, " is outside [0, ", universe_, ")"));
    const std::uint64_t bit = std::uint64_t(1) << static_cast<unsigned>(id & 63);
    std::uint64_t& word = words_[static_cast<std::size_t>(id >> 6)];
    word = value ? (word | bit) : (word & ~bit);
  }

  /// Removes `id` (same checks as set()).
  void reset(ItemId id) { set(id, false); }

  /// Adds every id of the universe.
  void set_all() noexcept {
    std::fill(words_.begin(), words_.end(), ~std::uint64_t(0));
    trim();
  }

  /// Removes every id.
  void clear_all() noexcept { std::fill(words_.begin(), words_.end(), std::uint64_t(0)); }

  /// True when `id` is in the set; false for any id outside [0, universe()).
  bool test(ItemId id) const noexcept {
    if (id < 0 || id >= universe_) return false;
    return ((words_[static_cast<std::size_t>(id >> 6)] >> static_cast<unsigned>(id & 63)) & 1u) != 0;
  }

  /// The number of ids in the set.
  Index count() const noexcept {
    Index total = 0;
    for (std::uint64_t w : words_) {
      for (; w != 0; w &= w - 1) ++total;
    }
    return total;
  }

  /// Keeps the ids that are in both sets (the universe stays this one's).
  IdBitset& operator&=(const IdBitset& other) noexcept {
    for (std::size_t i = 0; i < words_.size(); ++i) words_[i] &= i < other.words_.size() ? other.words_[i] : 0;
    return *this;
  }

  /// Adds the ids of `other` that lie in this universe.
  IdBitset& operator|=(const IdBitset& other) noexcept {
    const std::size_t n = std::min(words_.size(), other.words_.size());
    for (std::size_t i = 0; i < n; ++i) words_[i] |= other.words_[i];
    trim();
    return *this;
  }

 private:
  /// Clears the bits past universe_ in the last word.
  void trim() noexcept {
    const auto tail = static_cast<unsigned>(universe_ & 63);
    if (tail != 0 && !words_.empty()) words_.back() &= (std::uint64_t(1) << tail) - 1;
  }

  std::vector<std::uint64_t> words_;
  ItemId universe_ = 0;
};

/**
 * @brief One list of excluded item ids per query (a user's purchases, the seed item itself), stored as a CSR
 * pair: list q is ids()[offset(q), offset(q + 1)).
 *
 * Each list is kept sorted (add_list() sorts what it appends), so a search checks a candidate in
 * O(log list length). Ids that are not in the index are allowed and simply never match: a user's history
 * may name items that were removed since.
 *
 * @note Reuse: clear() keeps the storage, so refilling the same number of ids allocates nothing.
 */
class ExclusionLists {
 public:
  ExclusionLists() : offsets_(1, 0) {}

  /**
   * @brief Lists from a vector of vectors (list q excludes lists[q] from query q).
   * @throws std::invalid_argument if an id is negative.
   */
  explicit ExclusionLists(const std::vector<std::vector<ItemId>>& lists) : offsets_(1, 0) {
    std::size_t total = 0;
    for (const auto& list : lists) total += list.size();
    ids_.reserve(total);
    offsets_.reserve(lists.size() + 1);
    for (const auto& list : lists) add_list(list.data(), static_cast<Index>(list.size()));
  }

  /// Removes every list (the storage is kept).
  void clear() noexcept {
    offsets_.resize(1);
    ids_.clear();
  }

  /**
   * @brief Appends the list of the next query: `count` ids from `ids` (repeats are harmless).
   * @throws std::invalid_argument if count < 0, or ids is null while count > 0, or an id is negative.
   */
  void add_list(const ItemId* ids, Index count) {
    constexpr const char* where = "kshot::ExclusionLists::add_list()";
    KSHOT_CHECK(count >= 0, where, detail::cat("count must be >= 0, got ", count));
    KSHOT_CHECK(count == 0 || ids != nullptr, where, detail::cat("ids is null but count is ", count));
    for (Index i = 0; i < count; ++i)
      KSHOT_CHECK(ids[i] >= 0, where,
                  detail::cat("id ", ids[i], " at position ", i, " of list ", lists(), " is negative"));
    const std::size_t start = ids_.size();
    ids_.insert(ids_.end(), ids, ids + count);
    std::sort(ids_.begin() + static_cast<std::ptrdiff_t>(start), ids_.end());
    offsets_.push_back(static_cast<Index>(ids_.size()));
  }

  /// Appends the list of the next query from a std::vector.
  void add_list(const std::vector<ItemId>& ids) { add_list(ids.data(), static_cast<Index>(ids.size())); }

  /// The number of lists (it must equal the number of queries of a search).
  Index lists() const noexcept { return static_cast<Index>(offsets_.size()) - 1; }

  /// Start of list q's sorted ids (no bounds check).
  const ItemId* begin(Index q) const noexcept { return ids_.data() + offsets_[static_cast<std::size_t>(q)]; }
  /// End of list q's sorted ids (no bounds check).
  const ItemId* end(Index q) const noexcept { return ids_.data() + offsets_[static_cast<std::size_t>(q) + 1]; }

  /// True when list q holds `id` (no bounds check on q).
  bool excludes(Index q, ItemId id) const noexcept { return std::binary_search(begin(q), end(q), id); }

 private:
  std::vector<Index> offsets_;
  std::vector<ItemId> ids_;
};

/**
 * @brief Which items a search may return. Every part is optional; an item is returned only when it passes
 * all parts that are set.
 *
 * The filters are applied inside the selection (only to items whose score would enter the current top-k),
 * so a filter never costs a pass over the catalogue.
 */
struct SearchOptions {
  /// When not null: only ids whose bit is set (IdBitset::test) may be returned. Not owned; must outlive the call.
  const IdBitset* allowed = nullptr;
  /// When set: only ids for which it returns true. It may be called concurrently from several threads, in
  /// any order and any number of times per id, so it must be thread-safe; an exception it throws propagates out
  /// of search() (the result is then unspecified).
  std::function<bool(ItemId)> predicate;
  /// When not null: query q never returns an id of list q. It must hold one list per query. Not owned.
  const ExclusionLists* exclude = nullptr;
};

}  // namespace kshot

#endif  // KSHOT_RETRIEVAL_FILTER_HPP
