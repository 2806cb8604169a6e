/**
 * @file kshot/retrieval/flat_index.hpp
 * @brief FlatIndex: exact top-k search over a catalogue of embeddings (inner product, cosine, squared
 * Euclidean) with filters, per-query exclusions, incremental add and remove under stable external ids, and
 * save / load.
 *
 * Index file format (version 1, every number little-endian):
 *
 * | field | type | notes |
 * |---|---|---|
 * | magic | 8 bytes | "KSHOTIX1" |
 * | format version | u32 | 1 |
 * | scalar size | u32 | 4 (float) or 8 (double); must equal the loading index's |
 * | metric | u32 | 0 inner product, 1 cosine, 2 squared Euclidean |
 * | reserved | u32 | 0 |
 * | dimension | u64 | 1 to 2^31; at most 2^24 when the item count is 0 |
 * | item count | u64 | |
 * | ids | i64 x count | in storage order, each >= 0, no repeats |
 * | vectors | scalar x count x dimension | row after row; cosine: unit (within unit_tolerance) or zero rows; |
 * | | | otherwise squared norms at most max_squared_norm |
 * | checksum | u64 | FNV-1a 64 of every byte before it |
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_RETRIEVAL_FLAT_INDEX_HPP
#define KSHOT_RETRIEVAL_FLAT_INDEX_HPP

#include "kshot/core/binary_io.hpp"
#include "kshot/core/check.hpp"
#include "kshot/core/gemm.hpp"
#include "kshot/core/threads.hpp"
#include "kshot/core/types.hpp"
#include "kshot/kernels/ip_kernel.hpp"
#include "kshot/retrieval/detail/index_file.hpp"
#include "kshot/retrieval/detail/topk_select.hpp"
#include "kshot/retrieval/filter.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <vector>

#if defined(__has_include)
#if __has_include(<unistd.h>)
#include <unistd.h>
#endif
#endif

namespace kshot {

/// How a FlatIndex scores a query against an item.
enum class SearchMetric : std::uint32_t {
  inner_product = 0,     ///< q . x, larger first
  cosine = 1,            ///< q̂ . x̂ (unit vectors; a zero vector scores 0 against everything), larger first
  squared_euclidean = 2  ///< ||q - x||^2, smaller first
};

/**
 * @brief The result of FlatIndex::search(): for each query, up to k items best first.
 *
 * Row q of `ids` and `scores` holds query q's results: `counts[q]` real entries, then padding (id -1, score
 * `std::numeric_limits<Scalar>::lowest()` for similarities, `max()` for squared Euclidean) when fewer than k
 * items pass the filters or the index holds fewer than k items.
 *
 * @note Reusable: search() resizes the members, which allocates only when the shape changes.
 */
template <class Scalar>
struct SearchResult {
  IdMatrix ids;               ///< nq x k external ids, best first, -1 for padding
  RowMatrixX<Scalar> scores;  ///< nq x k scores (similarity, or squared distance for squared Euclidean)
  IndexVector counts;         ///< nq real results per query (k unless filters or the catalogue size cut it)

  /// The number of queries.
  Index queries() const noexcept { return ids.rows(); }
  /// The number of result columns (the k of the search).
  Index k() const noexcept { return ids.cols(); }
};

/**
 * @brief Exact top-k index over a catalogue of D-dimensional vectors stored densely under external ids.
 *
 * **Scores.** Inner product and cosine return similarities, largest first; squared Euclidean returns
 * ||q - x||^2 (computed as ||q||^2 + ||x||^2 - 2 q.x, clamped at 0), smallest first. Results are ordered by
 * exactly the returned score, and equal scores go to the **lower external id**, always. The number of threads
 * never changes a result (bitwise); for the order of adds and removes see Rounding below.
 *
 * **Cosine.** The index stores unit copies x / ||x|| (a zero vector is stored as zero and scores 0 against every
 * query); queries are normalised per call the same way. Norms are summed sequentially in double, so a vector's
 * stored form does not depend on its memory alignment.
 *
 * **Speed and memory.** Queries are processed in blocks of query_block rows and the catalogue in blocks of
 * catalogue_block rows. For float on AVX-512 builds, a fused kernel (detail/ip_kernel.hpp) scores 64 queries x 6
 * items per register tile straight from the row-major catalogue and compares each tile in registers with the
 * queries' current k-th best. Elsewhere (double, other instruction sets, or define KSHOT_RETRIEVAL_NO_KERNEL),
 * one single-threaded Eigen GEMM per pair of blocks, in fixed shapes, fills a query_block x catalogue_block
 * buffer that a SIMD threshold scan reads. Up to lazy_queries queries use Eigen's coefficient-based product,
 * which streams the catalogue at memory bandwidth. Candidates that reach the threshold go through the filters
 * into one bounded heap per query. Memory beyond the catalogue is a score buffer or packed query block per thread
 * plus k candidates per query of a block and task; the nq x n score matrix is never formed. A parallel search
 * runs (query block, catalogue range) tasks, at least tasks_per_thread per thread, dynamically scheduled; the
 * per-range top-k lists are merged, exactly under the total order, so the result is the same for any split and
 * any thread count.
 *
 * **Screening.** On builds with AVX512_BF16 (screening_available), a float batch search by inner product or
 * cosine first scores each tile in bfloat16 (VDPBF16PS: two products per lane and instruction) and computes the
 * exact float score only for the (query, item) pairs whose bfloat16 score comes within a rigorous error bound
 * of the query's current k-th best (detail::screen_chain_factor states the bound and its proof). Every pair that
 * could enter the top k is scored exactly, by the same chain as the fused kernel, and offered in the same order,
 * so the results are bitwise those of the search without screening. It costs a bfloat16 copy of the catalogue
 * (half the float catalogue) and two floats per item, built by the first batch search and kept in step by add()
 * (converted at the next search) and remove(); set_screening(false) frees it. Rows or queries with values of
 * magnitude 2^50 or more, or nonzero below 2^-50, are always scored exactly. Squared Euclidean searches and
 * searches of up to lazy_queries queries do not screen.
 *
 * **Rounding.** The fused kernel computes every score as one sequential chain of fused multiply-adds, so its
 * bits depend only on the two vectors. On the Eigen paths a score's last bits can depend on where its item sits in
 * a block, and storage order changes with remove(); items whose scores differ by a rounding error may then swap.
 * With data whose products are exact (small integers) results are identical whatever the history.
 *
 * @tparam Scalar float (the default) or double.
 * @note Not thread-safe: search() uses the index's scratch buffers, so one search at a time per index (it
 * parallelises itself). After the first search with given shapes, another search with the same or smaller
 * shapes allocates nothing in kshot's own buffers (on the Eigen GEMM path, Eigen may allocate its packing
 * buffers when they exceed EIGEN_STACK_ALLOCATION_LIMIT, as everywhere in kshot).
 */
template <class Scalar = float>
class FlatIndex {
  static_assert(is_supported_scalar_v<Scalar>, "kshot::FlatIndex<Scalar>: Scalar must be float or double");

 public:
  /// Query rows per GEMM block (and per parallel task of a batch search).
  static constexpr Index query_block = 256;
  /// Catalogue rows per GEMM block.
  static constexpr Index catalogue_block = 1024;
  /// Up to this many queries per search, scores come from Eigen's coefficient-based (lazy) product, which
  /// streams the catalogue at memory bandwidth: measured 5x faster than Eigen's GEMM for one query (d = 128), and
  /// faster than the fused kernel (whose 64-query tiles it cannot fill) up to about 32 queries.
  static constexpr Index lazy_queries = 32;
  /// A parallel search is cut into at least this many tasks per thread (dynamically scheduled).
  static constexpr Index tasks_per_thread = 4;

 private:
#if KSHOT_RETRIEVAL_HAS_KERNEL
  static constexpr bool use_kernel = std::is_same_v<Scalar, float>;
  static constexpr Index kernel_group_size = detail::kernel_group;
#else
  static constexpr bool use_kernel = false;
  static constexpr Index kernel_group_size = 1;
#endif

 public:
  /// True when this build can screen batch searches in bfloat16 (float, AVX512_BF16; see set_screening()).
  static constexpr bool screening_available = KSHOT_RETRIEVAL_HAS_SCREEN && std::is_same_v<Scalar, float>;

  /// The largest squared norm (summed in double) of a stored vector or a query under inner product and squared
  /// Euclidean: a quarter of the largest Scalar, so that every score |q.x| <= ||q|| ||x|| and every squared
  /// distance ||q - x||^2 <= 2 ||q||^2 + 2 ||x||^2 is finite. add(), search() and load() refuse larger rows
  /// (pairwise_distances() refuses rows whose squared norm overflows in the same way) rather than drop items
  /// whose score overflows. Cosine rows are normalised and need no bound.
  static constexpr double max_squared_norm = static_cast<double>(std::numeric_limits<Scalar>::max()) / 4;

  /// How far from 1 the squared norm of a stored cosine row may be when load() reads it: 16 epsilons of Scalar.
  /// Rounding each coordinate of x / ||x|| to Scalar moves the squared norm by at most one epsilon, so rows that
  /// save() wrote pass, and a file whose rows are not unit (which would score above 1) is refused.
  static constexpr double unit_tolerance = 16.0 * static_cast<double>(std::numeric_limits<Scalar>::epsilon());

  /**
   * @brief An empty index for `dim`-dimensional vectors.
   * @param dim the dimension, at least 1.
   * @param metric how queries score items.
   * @throws std::invalid_argument if dim < 1 or metric is not one of SearchMetric's values.
   */
  explicit FlatIndex(Index dim, SearchMetric metric = SearchMetric::inner_product) : dim_(dim), metric_(metric) {
    constexpr const char* where = "kshot::FlatIndex::FlatIndex()";
    KSHOT_CHECK(dim >= 1, where, detail::cat("dim must be >= 1, got ", dim));
    KSHOT_CHECK(valid_metric(static_cast<std::uint32_t>(metric)), where,
                detail::cat("metric has the unknown value ", static_cast<std::uint32_t>(metric)));
  }

  /// The vector dimension.
  Index dim() const noexcept { return dim_; }
  /// The metric.
  SearchMetric metric() const noexcept { return metric_; }
  /// The number of items.
  Index size() const noexcept { return static_cast<Index>(ids_.size()); }
  /// True when the index holds no item.
  bool empty() const noexcept { return ids_.empty(); }
  /// True when an item with external id `id` is in the index.
  bool contains(ItemId id) const { return rows_.find(id) != rows_.end(); }

  /**
   * @brief The stored vector of item `id` (a unit vector, or zero, under cosine).
   * @throws std::invalid_argument if `id` is not in the index.
   * @note Allocates the returned row.
   */
  RowVectorX<Scalar> vector(ItemId id) const {
    const auto it = rows_.find(id);
    KSHOT_CHECK(it != rows_.end(), "kshot::FlatIndex::vector()", detail::cat("id ", id, " is not in the index"));
    return catalogue().row(it->second);
  }

  /// The external ids in storage order (which remove() changes; results never depend on it).
  const std::vector<ItemId>& ids() const noexcept { return ids_; }

  /**
   * @brief Turns bfloat16 screening of batch searches on (the default where screening_available) or off.
   *
   * Screening never changes a result: see the class notes. Off, the bfloat16 copy of the catalogue (half the
   * catalogue's size) is freed; on, it is built by the next batch search, and rows added later are converted by
   * the search after them. Without screening_available this only records the choice.
   */
  void set_screening(bool on) {
    screening_ = on;
    if (!on) {
      screen_pairs_ = {};
      screen_norms_ = {};
      screen_rows_ = 0;
    }
  }

  /// True when batch searches screen in bfloat16: screening_available and not turned off.
  bool screening() const noexcept { return screening_available && screening_; }

  /**
   * @brief Pre-sizes the storage for `items` items in all, so that adds up to that size do not reallocate.
   * @throws std::invalid_argument if items < 0.
   */
  void reserve(Index items) {
    KSHOT_CHECK(items >= 0, "kshot::FlatIndex::reserve()", detail::cat("items must be >= 0, got ", items));
    const auto n = static_cast<std::size_t>(items);
    data_.reserve(n * static_cast<std::size_t>(dim_));
    ids_.reserve(n);
    if (metric_ == SearchMetric::squared_euclidean) norms_.reserve(n);
    rows_.reserve(n);
  }

  /**
   * @brief Adds items: row i of `vectors` under external id ids[i].
   *
   * All checks happen before anything changes: on an exception the index is as before.
   * @param vectors m x dim() rows (a column-major argument is copied when it binds).
   * @param ids m distinct ids, each >= 0 and not yet in the index.
   * @throws std::invalid_argument if vectors does not have dim() columns, ids does not have one entry per row,
   * a value of vectors is not finite, a row's squared norm exceeds max_squared_norm (inner product and squared
   * Euclidean: its scores could overflow), an id is negative, repeated in `ids`, or already in the index
   * (naming it).
   * @note Storage grows geometrically (amortised O(m d)); see reserve().
   */
  void add(ConstRowMatrixRef<Scalar> vectors, ConstIdRef ids) {
    constexpr const char* where = "kshot::FlatIndex::add()";
    KSHOT_CHECK(vectors.cols() == dim_, where,
                detail::cat("vectors has ", vectors.cols(), " columns but the index dimension is ", dim_));
    KSHOT_CHECK(ids.size() == vectors.rows(), where,
                detail::cat("ids has ", ids.size(), " entries but vectors has ", vectors.rows(), " rows"));
    detail::check_finite(vectors, where, "vectors");
    if (metric_ != SearchMetric::cosine) check_norms(vectors, where, "vectors");
    const Index m = vectors.rows();
    std::vector<ItemId> sorted(ids.data(), ids.data() + m);
    std::sort(sorted.begin(), sorted.end());
    for (Index i = 0; i < m; ++i) {
      KSHOT_CHECK(ids[i] >= 0, where, detail::cat("ids[", i, "] is ", ids[i], " but ids must be >= 0"));
      KSHOT_CHECK(!contains(ids[i]), where, detail::cat("id ", ids[i], " (ids[", i, "]) is already in the index"));
    }
    const auto repeat = std::adjacent_find(sorted.begin(), sorted.end());
    KSHOT_CHECK(repeat == sorted.end(), where, detail::cat("id ", *repeat, " appears more than once in ids"));

    const Index n = size();
    grow_to(n + m);
    data_.resize(static_cast<std::size_t>((n + m) * dim_));
    MutableCatalogue stored(data_.data(), n + m, dim_);
    for (Index i = 0; i < m; ++i) {
      auto dst = stored.row(n + i);
      if (metric_ == SearchMetric::cosine) {
        normalize_row(vectors.row(i), dst);
      } else {
        dst = vectors.row(i);
      }
      if (metric_ == SearchMetric::squared_euclidean) norms_.push_back(squared_norm(dst));
      ids_.push_back(ids[i]);
      rows_.emplace(ids[i], n + i);
    }
  }

  /// add() with the ids in a std::vector.
  void add(ConstRowMatrixRef<Scalar> vectors, const std::vector<ItemId>& ids) {
    add(vectors, Eigen::Map<const IdVector>(ids.data(), static_cast<Index>(ids.size())));
  }

  /**
   * @brief Removes the items with the given external ids. The last stored item moves into each hole, so the
   * storage stays dense; the other items keep their ids.
   *
   * All checks happen before anything changes.
   * @throws std::invalid_argument if an id is not in the index or appears twice in `ids` (naming it).
   */
  void remove(ConstIdRef ids) {
    constexpr const char* where = "kshot::FlatIndex::remove()";
    for (Index i = 0; i < ids.size(); ++i)
      KSHOT_CHECK(contains(ids[i]), where, detail::cat("id ", ids[i], " (ids[", i, "]) is not in the index"));
    std::vector<ItemId> sorted(ids.data(), ids.data() + ids.size());
    std::sort(sorted.begin(), sorted.end());
    const auto repeat = std::adjacent_find(sorted.begin(), sorted.end());
    KSHOT_CHECK(repeat == sorted.end(), where, detail::cat("id ", *repeat, " appears more than once in ids"));
    auto stored = catalogue_mutable();
    for (Index i = 0; i < ids.size(); ++i) {
      const auto it = rows_.find(ids[i]);
      const Index row = it->second, last = size() - 1;
      rows_.erase(it);
      if (row != last) {
        stored.row(row) = stored.row(last);
        if (row < screen_rows_) convert_screen_rows(row, row + 1);
        ids_[static_cast<std::size_t>(row)] = ids_[static_cast<std::size_t>(last)];
        if (metric_ == SearchMetric::squared_euclidean)
          norms_[static_cast<std::size_t>(row)] = norms_[static_cast<std::size_t>(last)];
        rows_[ids_[static_cast<std::size_t>(row)]] = row;
      }
      ids_.pop_back();
      if (metric_ == SearchMetric::squared_euclidean) norms_.pop_back();
      data_.resize(static_cast<std::size_t>(last * dim_));
      screen_rows_ = std::min(screen_rows_, last);
    }
  }

  /// remove() with the ids in a std::vector.
  void remove(const std::vector<ItemId>& ids) {
    remove(Eigen::Map<const IdVector>(ids.data(), static_cast<Index>(ids.size())));
  }

  /// Removes every item (storage is kept).
  void clear() noexcept {
    data_.clear();
    ids_.clear();
    norms_.clear();
    rows_.clear();
    screen_rows_ = 0;
  }

  /**
   * @brief The k best items for each query row, best first (see the class notes for scores and ties).
   *
   * @param queries nq x dim() rows (nq may be 0; a column-major argument is copied when it binds).
   * @param k results per query, at least 1. When fewer than k items pass the filters (or k > size()), the row
   * holds the counts[q] that do, then padding: id -1 and score lowest() (similarities) or max() (squared
   * Euclidean). That is not an error.
   * @param result resized to nq x k (reused: no allocation when the shape is unchanged).
   * @param options allow-bitset, predicate and per-query exclusions (see SearchOptions). Excluded ids that are
   * not in the index are ignored.
   * @throws std::invalid_argument if k < 1, queries does not have dim() columns, a query value is not finite,
   * a query's squared norm exceeds max_squared_norm (inner product and squared Euclidean), or options.exclude
   * does not hold exactly nq lists.
   * @throws std::length_error, before anything is allocated, if the nq x k result and the k candidates kept per
   * query of a block need more bytes than can be addressed (PTRDIFF_MAX) or than the machine's physical memory
   * holds: such a result could not be allocated (k > size() alone is fine; the rows are padded).
   * @note Threads: parallel over (query block, catalogue range) tasks; the result is bitwise the same for any
   * thread count. Allocation: none in kshot's buffers once a search with the same or larger shapes (and the
   * same thread count) has run (see the class notes on Eigen's GEMM).
   */
  void search(ConstRowMatrixRef<Scalar> queries, Index k, SearchResult<Scalar>& result,
              const SearchOptions& options = {}) {
    constexpr const char* where = "kshot::FlatIndex::search()";
    KSHOT_CHECK(k >= 1, where, detail::cat("k must be >= 1, got ", k));
    KSHOT_CHECK(queries.cols() == dim_, where,
                detail::cat("queries has ", queries.cols(), " columns but the index dimension is ", dim_));
    const Index nq = queries.rows();
    if (options.exclude != nullptr)
      KSHOT_CHECK(
          options.exclude->lists() == nq, where,
          detail::cat("options.exclude has ", options.exclude->lists(), " lists but queries has ", nq, " rows"));
    detail::check_finite(queries, where, "queries");
    check_result_size(nq, k, where);
    if (metric_ != SearchMetric::cosine) check_norms(queries, where, "queries");
    result.ids.resize(nq, k);
    result.scores.resize(nq, k);
    result.counts.resize(nq);
    if (nq == 0) return;
    const Index n = size();
    if (n == 0) {
      for (Index q = 0; q < nq; ++q) write_row(result, q, nullptr, 0);
      return;
    }

    // Queries in the form the GEMM needs: unit rows for cosine; squared norms for squared Euclidean.
    const Index qrows = std::min(query_block, nq);
    const Index crows = std::min(catalogue_block, n);
    const Scalar* qdata = queries.data();
    Index qstride = queries.outerStride();
    if (metric_ == SearchMetric::cosine) {
      grow(query_copy_, static_cast<std::size_t>(nq * dim_));
      Eigen::Map<RowMatrixX<Scalar>> copy(query_copy_.data(), nq, dim_);
      for (Index q = 0; q < nq; ++q) {
        auto row = copy.row(q);
        normalize_row(queries.row(q), row);
      }
      qdata = query_copy_.data();
      qstride = dim_;
    } else if (metric_ == SearchMetric::squared_euclidean) {
      grow(query_norms_, static_cast<std::size_t>(nq));
      for (Index q = 0; q < nq; ++q) query_norms_[static_cast<std::size_t>(q)] = squared_norm(queries.row(q));
    }
    using QueryMap = Eigen::Map<const RowMatrixX<Scalar>, Eigen::Unaligned, Eigen::OuterStride<>>;
    const QueryMap Q(qdata, nq, dim_, Eigen::OuterStride<>(qstride));

    // Tasks: query blocks x catalogue ranges, handed out dynamically. When there are fewer than tasks_per_thread
    // query blocks per thread, the catalogue is split into ranges as well (each range's lists are merged at the
    // end), so that a thread slowed down by other work on its core takes fewer tasks. Every score comes from the
    // same (query block, catalogue block) computation whatever the split.
    const Index query_blocks = (nq + query_block - 1) / query_block;
    const Index catalogue_blocks = (n + catalogue_block - 1) / catalogue_block;
    const double work = double(nq) * double(n) * double(dim_);
    const bool parallel = detail::worth_parallel(std::max(query_blocks, catalogue_blocks), work);
    const Index threads = parallel ? static_cast<Index>(max_threads()) : 1;
    Index ranges = 1;
    if (parallel && query_blocks < tasks_per_thread * threads)
      ranges = std::min(catalogue_blocks, (tasks_per_thread * threads + query_blocks - 1) / query_blocks);
    const Index tasks = query_blocks * ranges;
    const Index heap_slots = ranges > 1 ? tasks : threads;

    if (static_cast<Index>(scores_.size()) < threads) scores_.resize(static_cast<std::size_t>(threads));
    if (!use_kernel || nq <= lazy_queries)
      for (Index t = 0; t < threads; ++t)
        grow(scores_[static_cast<std::size_t>(t)], static_cast<std::size_t>(qrows * crows));
    grow(heaps_, static_cast<std::size_t>(heap_slots * qrows * k));
    grow(heap_sizes_, static_cast<std::size_t>(heap_slots * qrows));

    const auto stored = catalogue();
    const bool lazy = nq <= lazy_queries;
    const bool fused = use_kernel && !lazy;
    const bool screened = fused && screening() && metric_ != SearchMetric::squared_euclidean;
    if (fused) {
      const Index lanes = (qrows + kernel_group_size - 1) / kernel_group_size * kernel_group_size;
      if (static_cast<Index>(kernel_scratch_.size()) < threads)
        kernel_scratch_.resize(static_cast<std::size_t>(threads));
      for (Index t = 0; t < threads; ++t)
        grow(kernel_scratch_[static_cast<std::size_t>(t)], static_cast<std::size_t>(lanes * (dim_ + 2)));
      if (screened) {
        convert_screen_rows(screen_rows_, n);
        if (static_cast<Index>(screen_scratch_.size()) < threads)
          screen_scratch_.resize(static_cast<std::size_t>(threads));
        for (Index t = 0; t < threads; ++t)
          grow(screen_scratch_[static_cast<std::size_t>(t)], static_cast<std::size_t>(lanes * screen_pairs()));
      }
    }
    detail::parallel_for(
        tasks, parallel,
        [&](Index task) {
          const Index qb = task / ranges, range = task % ranges;
          const Index q0 = qb * query_block, qr = std::min(query_block, nq - q0);
          const Index b0 = range * catalogue_blocks / ranges, b1 = (range + 1) * catalogue_blocks / ranges;
          const Index thread = parallel ? static_cast<Index>(thread_index()) : 0;
          const Index slot = ranges > 1 ? task : thread;
          detail::Candidate<Scalar>* heaps = heaps_.data() + slot * qrows * k;
          Index* sizes = heap_sizes_.data() + slot * qrows;
          std::fill(sizes, sizes + qr, Index(0));
          if (fused) {
            fused_task(qdata, qstride, q0, qr, b0, b1, k, heaps, sizes,
                       kernel_scratch_[static_cast<std::size_t>(thread)].data(),
                       screened ? screen_scratch_[static_cast<std::size_t>(thread)].data() : nullptr, options);
            finish_rows(result, q0, qr, k, heaps, sizes, ranges);
            return;
          }
          Scalar* buffer = scores_[static_cast<std::size_t>(thread)].data();
          for (Index b = b0; b < b1; ++b) {
            const Index c0 = b * catalogue_block, cr = std::min(catalogue_block, n - c0);
            Eigen::Map<RowMatrixX<Scalar>> S(buffer, qr, cr);
            if (lazy) {
              S.noalias() = Q.middleRows(q0, qr).lazyProduct(stored.middleRows(c0, cr).transpose());
            } else {
              detail::gemm_assign(S, Q.middleRows(q0, qr), stored.middleRows(c0, cr).transpose());
            }
            for (Index r = 0; r < qr; ++r) {
              Scalar* keys = buffer + r * cr;
              if (metric_ == SearchMetric::squared_euclidean) to_distance_keys(keys, c0, cr, q0 + r);
              detail::TopKHeap<Scalar> heap(heaps + r * k, k, sizes + r);
              detail::scan_keys(keys, ids_.data() + c0, cr, heap, filter_for(options, q0 + r));
            }
          }
          finish_rows(result, q0, qr, k, heaps, sizes, ranges);
        },
        /*dynamic=*/true);
    if (ranges == 1) return;

    // Merge each query's per-range lists (exact top-k under a total order: the same for any split).
    grow(merge_, static_cast<std::size_t>(ranges * k));
    for (Index q = 0; q < nq; ++q) {
      const Index qb = q / query_block, r = q % query_block;
      Index total = 0;
      for (Index range = 0; range < ranges; ++range) {
        const Index slot = qb * ranges + range;
        const detail::Candidate<Scalar>* h = heaps_.data() + (slot * qrows + r) * k;
        const Index count = heap_sizes_[static_cast<std::size_t>(slot * qrows + r)];
        std::copy(h, h + count, merge_.data() + total);
        total += count;
      }
      const Index keep = std::min(total, k);
      std::partial_sort(merge_.data(), merge_.data() + keep, merge_.data() + total, detail::better<Scalar>);
      write_row(result, q, merge_.data(), keep);
    }
  }

  /// search() into a new SearchResult.
  SearchResult<Scalar> search(ConstRowMatrixRef<Scalar> queries, Index k, const SearchOptions& options = {}) {
    SearchResult<Scalar> result;
    search(queries, k, result, options);
    return result;
  }

  /**
   * @brief Writes the index to `path` (format in the file comment), through `path + ".tmp"` renamed over
   * `path` at the end, so a failure never leaves a half-written index file.
   * @throws std::runtime_error naming the path if the file cannot be written or renamed.
   */
  void save(const std::string& path) const {
    constexpr const char* where = "kshot::FlatIndex::save()";
    detail::write_file_atomically(path, where, [&](std::ostream& out) {
      detail::IndexFileWriter writer(out);
      writer.bytes(detail::index_file_magic, sizeof(detail::index_file_magic));
      writer.u32(detail::index_file_version);
      writer.u32(static_cast<std::uint32_t>(sizeof(Scalar)));
      writer.u32(static_cast<std::uint32_t>(metric_));
      writer.u32(0);
      writer.u64(static_cast<std::uint64_t>(dim_));
      writer.u64(static_cast<std::uint64_t>(size()));
      writer.values(ids_.data(), ids_.size());
      writer.values(data_.data(), data_.size());
      writer.finish();
    });
  }

  /**
   * @brief Reads an index written by save() into a new index, returned only when everything checked.
   * @throws std::runtime_error naming the path and the problem: the file cannot be opened, wrong magic,
   * unknown format version, a scalar size other than sizeof(Scalar), an unknown metric, dimension 0, a count
   * the file cannot hold, a dimension above detail::index_file_max_unbacked_dim (2^24) in a file with no item,
   * a negative or repeated id, a non-finite value, a cosine row that is neither zero nor unit (squared norm
   * within unit_tolerance of 1), an inner-product or squared-Euclidean row whose squared norm exceeds
   * max_squared_norm, a truncated file, a checksum mismatch, or bytes after the checksum. Every size is
   * checked against the bytes the file holds before anything is allocated.
   */
  static FlatIndex load(const std::string& path) {
    constexpr const char* where = "kshot::FlatIndex::load()";
    std::ifstream in(path, std::ios::binary);
    if (!in) detail::throw_runtime_error(where, detail::cat("'", path, "': cannot open the file"));
    in.seekg(0, std::ios::end);
    const std::streamoff file_size = in.tellg();
    in.seekg(0, std::ios::beg);
    if (!in || file_size < 0)
      detail::throw_runtime_error(where, detail::cat("'", path, "': cannot read the file size"));
    detail::IndexFileReader reader(in, where, "'" + path + "'", static_cast<std::int64_t>(file_size));

    char magic[sizeof(detail::index_file_magic)];
    reader.bytes(magic, sizeof(magic), "the magic bytes");
    if (std::memcmp(magic, detail::index_file_magic, sizeof(magic)) != 0)
      reader.fail("wrong magic bytes: not a kshot index file (expected \"KSHOTIX1\")");
    const std::uint32_t version = reader.u32("the format version");
    if (version != detail::index_file_version)
      reader.fail(
          detail::cat("unknown format version ", version, " (this kshot reads ", detail::index_file_version, ")"));
    const std::uint32_t scalar_size = reader.u32("the scalar size");
    if (scalar_size != sizeof(Scalar))
      reader.fail(detail::cat("the file holds ", scalar_size, "-byte scalars but this index uses ", sizeof(Scalar),
                              "-byte scalars"));
    const std::uint32_t metric = reader.u32("the metric");
    if (!valid_metric(metric)) reader.fail(detail::cat("unknown metric ", metric));
    const std::uint32_t reserved = reader.u32("the reserved field");
    if (reserved != 0) reader.fail(detail::cat("the reserved field is ", reserved, " but must be 0"));
    const std::uint64_t dim = reader.u64("the dimension");
    if (dim < 1 || dim > (std::uint64_t(1) << 31)) reader.fail(detail::cat("invalid dimension ", dim));
    const std::uint64_t count = reader.u64("the item count");
    if (count == 0 && dim > detail::index_file_max_unbacked_dim)
      reader.fail(detail::cat("dimension ", dim, " with no stored vector: an empty index file may declare at most ",
                              detail::index_file_max_unbacked_dim, " dimensions (no bytes of the file back more)"));
    const auto remaining = static_cast<std::uint64_t>(reader.limit() - reader.offset());
    const std::uint64_t row_bytes = 8 + dim * sizeof(Scalar);
    if (count > remaining / row_bytes)
      reader.fail(detail::cat("the item count ", count, " needs ", count, " x ", row_bytes, " bytes but only ",
                              remaining, " remain"));
    reader.require_available(count * row_bytes + 8, "the ids, vectors and checksum");

    FlatIndex index(static_cast<Index>(dim), static_cast<SearchMetric>(metric));
    const auto n = static_cast<std::size_t>(count);
    index.reserve(static_cast<Index>(n));
    index.ids_.resize(n);
    reader.values(index.ids_.data(), n, "the ids");
    index.data_.resize(n * static_cast<std::size_t>(dim));
    reader.values(index.data_.data(), index.data_.size(), "the vectors");
    const std::uint64_t expected = reader.hash();
    const std::uint64_t stored_hash = reader.u64("the checksum");
    if (stored_hash != expected) reader.fail("checksum mismatch: the file is corrupt");
    if (reader.offset() != reader.limit())
      reader.fail(detail::cat(reader.limit() - reader.offset(), " bytes of trailing data after the checksum"));

    for (std::size_t i = 0; i < n; ++i) {
      const ItemId id = index.ids_[i];
      if (id < 0) reader.fail(detail::cat("id ", i, " is negative (", id, ")"));
      if (!index.rows_.emplace(id, static_cast<Index>(i)).second)
        reader.fail(detail::cat("id ", id, " appears more than once"));
    }
    if (!detail::all_finite_contiguous(index.data_.data(), static_cast<Index>(index.data_.size())))
      reader.fail("the vectors hold a non-finite value");
    const auto rows = index.catalogue();
    for (std::size_t i = 0; i < n; ++i) {
      const double sum = squared_norm_in_double(rows.row(static_cast<Index>(i)));
      if (index.metric_ == SearchMetric::cosine) {
        if (sum != 0.0 && !(std::abs(sum - 1.0) <= unit_tolerance))
          reader.fail(detail::cat("vector ", i, " (id ", index.ids_[i], ") has squared norm ", sum,
                                  " but a cosine index stores unit rows (|squared norm - 1| <= ", unit_tolerance,
                                  ") or zero rows"));
      } else if (!(sum <= max_squared_norm)) {
        reader.fail(detail::cat("vector ", i, " (id ", index.ids_[i], ") has squared norm ", sum, ", more than ",
                                max_squared_norm, " (a quarter of the largest Scalar), so its scores could overflow"));
      }
      if (index.metric_ == SearchMetric::squared_euclidean) index.norms_.push_back(static_cast<Scalar>(sum));
    }
    return index;
  }

 private:
  using Catalogue = Eigen::Map<const RowMatrixX<Scalar>>;
  using MutableCatalogue = Eigen::Map<RowMatrixX<Scalar>>;

  static bool valid_metric(std::uint32_t m) noexcept { return m <= 2; }

  Catalogue catalogue() const { return Catalogue(data_.data(), size(), dim_); }
  MutableCatalogue catalogue_mutable() { return MutableCatalogue(data_.data(), size(), dim_); }

  /// ||x||^2 summed sequentially in double (independent of alignment and vectorisation).
  template <class Row>
  static Scalar squared_norm(const Row& x) {
    return static_cast<Scalar>(squared_norm_in_double(x));
  }

  /// The squared norm of a row, summed sequentially in double (the one sum behind squared_norm(), the norm
  /// checks and load()'s checks).
  template <class Row>
  static double squared_norm_in_double(const Row& x) {
    double sum = 0.0;
    for (Index j = 0; j < x.size(); ++j) sum += static_cast<double>(x[j]) * static_cast<double>(x[j]);
    return sum;
  }

  /// dst = x / ||x|| (zero for a zero x), with the norm summed sequentially in double. A row whose squared norm
  /// overflows double (values beyond 1e154, double only) is first divided by its largest magnitude, so that it
  /// still becomes a unit vector rather than zero.
  template <class Row, class Dst>
  static void normalize_row(const Row& x, Dst& dst) {
    double sum = 0.0;
    for (Index j = 0; j < x.size(); ++j) sum += static_cast<double>(x[j]) * static_cast<double>(x[j]);
    double scale = 1.0;
    if (KSHOT_UNLIKELY(!std::isfinite(sum))) {
      for (Index j = 0; j < x.size(); ++j) scale = std::max(scale, std::abs(static_cast<double>(x[j])));
      sum = 0.0;
      for (Index j = 0; j < x.size(); ++j) {
        const double v = static_cast<double>(x[j]) / scale;
        sum += v * v;
      }
    }
    const double norm = std::sqrt(sum);
    for (Index j = 0; j < x.size(); ++j)
      dst[j] = norm > 0.0 ? static_cast<Scalar>(static_cast<double>(x[j]) / scale / norm) : Scalar(0);
  }

  /// Throws unless every row of `x` has a squared norm (summed in double) of at most max_squared_norm.
  template <class Rows>
  static void check_norms(const Rows& x, const char* where, const char* name) {
    for (Index i = 0; i < x.rows(); ++i) {
      const double sum = squared_norm_in_double(x.row(i));
      if (KSHOT_UNLIKELY(!(sum <= max_squared_norm)))
        detail::throw_invalid_argument(
            where, detail::cat(name, " row ", i, " is finite but its squared norm (", sum, ") exceeds ",
                               max_squared_norm, " (a quarter of the largest Scalar), so its scores could overflow ",
                               "the scalar type; rescale the data"));
    }
  }

  /// Throws std::length_error unless the result of an nq x k search and its per-query candidate lists fit in
  /// memory: at most PTRDIFF_MAX bytes and at most the machine's physical memory (where the system reports it).
  static void check_result_size(Index nq, Index k, const char* where) {
    const double per_entry = static_cast<double>(sizeof(ItemId) + sizeof(Scalar));
    const double bytes = static_cast<double>(nq) * static_cast<double>(k) * per_entry +
                         static_cast<double>(std::min(nq, query_block)) * static_cast<double>(k) *
                             static_cast<double>(sizeof(detail::Candidate<Scalar>));
    // Every realistic search stops here, before the system call below (a search of one query runs in microseconds).
    if (bytes < 1073741824.0) return;
    double limit = static_cast<double>(std::numeric_limits<std::ptrdiff_t>::max());
    const char* bound = "PTRDIFF_MAX";
#if defined(_SC_PHYS_PAGES) && defined(_SC_PAGESIZE)
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages > 0 && page > 0 && static_cast<double>(pages) * static_cast<double>(page) < limit) {
      limit = static_cast<double>(pages) * static_cast<double>(page);
      bound = "the physical memory";
    }
#endif
    if (KSHOT_UNLIKELY(bytes > limit))
      throw std::length_error(detail::cat(where, ": k = ", k, " results for each of ", nq, " queries need ", bytes,
                                          " bytes, more than ", bound, " (", limit,
                                          " bytes); ask for fewer results per call"));
  }

  /// Storage growth for m items in all: geometric, so that repeated small adds stay amortised O(1) per value.
  void grow_to(Index items) {
    const auto n = static_cast<std::size_t>(items);
    const auto values = n * static_cast<std::size_t>(dim_);
    if (data_.capacity() < values) data_.reserve(std::max(values, 2 * data_.capacity()));
    if (ids_.capacity() < n) ids_.reserve(std::max(n, 2 * ids_.capacity()));
    if (metric_ == SearchMetric::squared_euclidean && norms_.capacity() < n)
      norms_.reserve(std::max(n, 2 * norms_.capacity()));
    rows_.reserve(n);
  }

  template <class Vector>
  static void grow(Vector& v, std::size_t n) {
    if (v.size() < n) v.resize(n);
  }

  /// Turns q.x into the negated squared distance -max(0, ||q||^2 + ||x||^2 - 2 q.x), larger-is-better.
  void to_distance_keys(Scalar* keys, Index c0, Index count, Index q) const {
    Eigen::Map<Eigen::Array<Scalar, Eigen::Dynamic, 1>> k(keys, count);
    const Eigen::Map<const Eigen::Array<Scalar, Eigen::Dynamic, 1>> xn(norms_.data() + c0, count);
    const Scalar qn = query_norms_[static_cast<std::size_t>(q)];
    k = (Scalar(2) * k - (xn + qn)).min(Scalar(0));
  }

  static detail::QueryFilter filter_for(const SearchOptions& options, Index q) {
    detail::QueryFilter filter;
    filter.allowed = options.allowed;
    filter.predicate = options.predicate ? &options.predicate : nullptr;
    if (options.exclude != nullptr) {
      filter.exclude_begin = options.exclude->begin(q);
      filter.exclude_end = options.exclude->end(q);
    }
    return filter;
  }

  /// When a task owns its queries whole (one catalogue range), sorts their heaps into the result.
  void finish_rows(SearchResult<Scalar>& result, Index q0, Index qr, Index k, detail::Candidate<Scalar>* heaps,
                   const Index* sizes, Index ranges) const {
    if (ranges != 1) return;
    for (Index r = 0; r < qr; ++r) {
      detail::Candidate<Scalar>* h = heaps + r * k;
      std::sort(h, h + sizes[r], detail::better<Scalar>);
      write_row(result, q0 + r, h, sizes[r]);
    }
  }

  /// The fused kernel for query rows [q0, q0 + qr) against catalogue blocks [b0, b1) (float, AVX-512 builds).
  /// With `screen` (a thread's screening scratch, or null), the bfloat16-screened kernel (same results).
  void fused_task(const Scalar* qdata, Index qstride, Index q0, Index qr, Index b0, Index b1, Index k,
                  detail::Candidate<Scalar>* heaps, Index* sizes, Scalar* scratch, std::uint32_t* screen,
                  const SearchOptions& options) const {
#if KSHOT_RETRIEVAL_HAS_KERNEL
    if constexpr (std::is_same_v<Scalar, float>) {
      constexpr Index group = detail::kernel_group;
      const Index groups = (qr + group - 1) / group, n = size();
      const bool distance = metric_ == SearchMetric::squared_euclidean;
      float* packed = scratch;                             // groups x d x kernel_group
      float* thresholds = packed + groups * group * dim_;  // groups x kernel_group
      float* qnorms = thresholds + groups * group;         // groups x kernel_group (screening: ||q||)
#if KSHOT_RETRIEVAL_HAS_SCREEN
      const Index pairs = screen_pairs();
      float* e2 = packed;  // groups x kernel_group (screening only: the float packing is not used then)
#endif
      for (Index g = 0; g < groups; ++g) {
        const Index first = q0 + g * group, count = std::min(group, qr - g * group);
        for (Index lane = 0; lane < group; ++lane) {
          thresholds[g * group + lane] =
              lane < count ? -std::numeric_limits<float>::infinity() : std::numeric_limits<float>::infinity();
          qnorms[g * group + lane] =
              distance && lane < count ? query_norms_[static_cast<std::size_t>(first + lane)] : 0.0f;
        }
#if KSHOT_RETRIEVAL_HAS_SCREEN
        if (screen != nullptr) {
          detail::pack_screen_group(qdata + first * qstride, qstride, count, dim_, screen + g * group * pairs,
                                    qnorms + g * group, e2 + g * group);
          continue;
        }
#endif
        detail::pack_query_group(qdata + first * qstride, qstride, count, dim_, packed + g * group * dim_);
      }
      const float* x = data_.data();
      for (Index b = b0; b < b1; ++b) {
        const Index c0 = b * catalogue_block, cr = std::min(catalogue_block, n - c0);
        for (Index g = 0; g < groups; ++g) {
          auto offer = [&](int lane, Index item, float key) -> float {
            const Index r = g * group + lane;
            detail::TopKHeap<float> heap(heaps + r * k, k, sizes + r);
            const detail::Candidate<float> c{key, ids_[static_cast<std::size_t>(c0 + item)]};
            if (heap.admits(c) && filter_for(options, q0 + r).pass(c.id)) heap.push(c);
            return heap.threshold();
          };
#if KSHOT_RETRIEVAL_HAS_SCREEN
          if (screen != nullptr) {
            detail::screen_scan(screen + g * group * pairs, qdata + (q0 + g * group) * qstride, qstride,
                                std::min(group, qr - g * group), qnorms + g * group, e2 + g * group,
                                screen_pairs_.data() + c0 * pairs, pairs, x + c0 * dim_, screen_norms_.data() + 2 * c0,
                                cr, dim_, thresholds + g * group, offer);
            continue;
          }
#endif
          detail::kernel_scan(packed + g * group * dim_, x + c0 * dim_, dim_, cr, dim_, thresholds + g * group,
                              distance, qnorms + g * group, distance ? norms_.data() + c0 : nullptr, offer);
        }
      }
      return;
    }
#endif
    (void)qdata, (void)qstride, (void)q0, (void)qr, (void)b0, (void)b1, (void)k, (void)heaps, (void)sizes,
        (void)scratch, (void)screen, (void)options;
  }

  /// bfloat16 pairs per screening row.
  Index screen_pairs() const noexcept { return (dim_ + 1) / 2; }

  /// Converts stored rows [from, to) for screening (growing the copy to size() rows) and marks rows [0, to) as
  /// converted when from == screen_rows_.
  void convert_screen_rows(Index from, Index to) {
#if KSHOT_RETRIEVAL_HAS_SCREEN
    if constexpr (std::is_same_v<Scalar, float>) {
      const Index pairs = screen_pairs(), n = size();
      grow(screen_pairs_, static_cast<std::size_t>(n * pairs));
      grow(screen_norms_, static_cast<std::size_t>(2 * n));
      const double chain = detail::screen_chain_factor(dim_);
      for (Index i = from; i < to; ++i)
        detail::pack_screen_row(data_.data() + i * dim_, dim_, chain, screen_pairs_.data() + i * pairs,
                                screen_norms_.data() + 2 * i);
      if (from == screen_rows_) screen_rows_ = std::max(screen_rows_, to);
      return;
    }
#endif
    (void)from, (void)to;
  }

  /// Writes query q's `count` sorted candidates, then padding.
  void write_row(SearchResult<Scalar>& result, Index q, const detail::Candidate<Scalar>* best, Index count) const {
    const bool distance = metric_ == SearchMetric::squared_euclidean;
    const Index k = result.ids.cols();
    for (Index i = 0; i < count; ++i) {
      result.ids(q, i) = best[i].id;
      result.scores(q, i) = distance ? Scalar(0) - best[i].key : best[i].key;  // 0 - key: no -0
    }
    const Scalar pad = distance ? std::numeric_limits<Scalar>::max() : std::numeric_limits<Scalar>::lowest();
    for (Index i = count; i < k; ++i) {
      result.ids(q, i) = -1;
      result.scores(q, i) = pad;
    }
    result.counts[q] = count;
  }

  Index dim_;
  SearchMetric metric_;
  std::vector<Scalar, Eigen::aligned_allocator<Scalar>> data_;  // size() x dim_, row-major, dense
  std::vector<ItemId> ids_;                                     // external id of each stored row
  std::vector<Scalar> norms_;                                   // ||x||^2 per row (squared Euclidean only)
  std::unordered_map<ItemId, Index> rows_;                      // external id -> stored row

  // Search scratch: grows, never shrinks.
  std::vector<std::vector<Scalar, Eigen::aligned_allocator<Scalar>>> scores_;  // per thread: query x catalogue block
  std::vector<detail::Candidate<Scalar>> heaps_;                               // k candidates per query and slot
  std::vector<Index> heap_sizes_;
  std::vector<detail::Candidate<Scalar>> merge_;
  std::vector<std::vector<Scalar, Eigen::aligned_allocator<Scalar>>> kernel_scratch_;  // per thread (fused kernel)
  std::vector<Scalar, Eigen::aligned_allocator<Scalar>> query_copy_;
  std::vector<Scalar> query_norms_;

  // bfloat16 screening: the pairs and norm bounds of stored rows [0, screen_rows_), converted lazily by search().
  bool screening_ = true;
  std::vector<std::uint32_t> screen_pairs_;
  std::vector<float> screen_norms_;  // a_x, b_x per row (detail::pack_screen_row)
  Index screen_rows_ = 0;
  std::vector<std::vector<std::uint32_t>> screen_scratch_;  // per thread: packed query groups
};

}  // namespace kshot

#endif  // KSHOT_RETRIEVAL_FLAT_INDEX_HPP
