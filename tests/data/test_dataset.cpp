// SPDX-License-Identifier: MIT
// Label maps, the per-class index, small-class filtering, class splits and the dataset view.
#include <kshot/data.hpp>

#include "test_util.hpp"

using namespace kshot;

TEST_CASE("data.labels: raw ids map to dense labels in sorted order and back") {
  const std::vector<RawId> raw = {9001, -5, 42, 9001, 42, 7};
  const LabelMap map(raw);
  CHECK(map.num_classes() == 4);
  CHECK(map.encode(-5) == 0);
  CHECK(map.encode(7) == 1);
  CHECK(map.encode(42) == 2);
  CHECK(map.encode(9001) == 3);
  const LabelVector dense = map.encode(raw);
  CHECK(dense == (LabelVector(6) << 3, 0, 2, 3, 2, 1).finished());
  for (Label l = 0; l < 4; ++l) CHECK(map.encode(map.decode(l)) == l);
  CHECK(map.contains(42));
  CHECK(!map.contains(43));
  KSHOT_CHECK_THROWS_WITH_ALL(map.encode(43), std::out_of_range, "kshot::LabelMap::encode()", "raw id 43");
  KSHOT_CHECK_THROWS_WITH_ALL(map.encode(std::vector<RawId>{7, 8}), std::out_of_range, "raw id 8 at position 1");
  KSHOT_CHECK_THROWS_WITH_ALL(map.decode(4), std::out_of_range, "kshot::LabelMap::decode()", "label 4 is outside [0, 4)");
}

TEST_CASE("data.class_index: rows per class in increasing order") {
  const LabelVector labels = (LabelVector(8) << 2, 0, 2, 1, 0, 2, 2, 1).finished();
  const ClassIndex index(labels);
  CHECK(index.num_classes() == 3);
  CHECK(index.num_rows() == 8);
  CHECK(index.count(0) == 2);
  CHECK(index.count(1) == 2);
  CHECK(index.count(2) == 4);
  const Index* r2 = index.rows(2);
  CHECK(std::vector<Index>(r2, r2 + 4) == std::vector<Index>{0, 2, 5, 6});
  CHECK(index.classes_with_at_least(3) == std::vector<Label>{2});
  CHECK(index.classes_with_at_least(2) == std::vector<Label>{0, 1, 2});  // exactly min_count rows is enough
  CHECK(index.classes_with_at_least(5).empty());
  const ClassIndex wide(labels, 5);
  CHECK(wide.num_classes() == 5);
  CHECK(wide.count(4) == 0);
  KSHOT_CHECK_THROWS_WITH_ALL(ClassIndex(labels, 2), std::invalid_argument, "kshot::ClassIndex::ClassIndex()",
                              "labels[0] = 2 is outside [0, 2)");
  const LabelVector negative = (LabelVector(2) << 0, -1).finished();
  KSHOT_CHECK_THROWS_WITH_ALL(ClassIndex{negative}, std::invalid_argument, "labels[1] = -1");
  KSHOT_CHECK_THROWS_WITH_ALL(index.count(3), std::out_of_range, "class 3 is outside [0, 3)");
}

TEST_CASE("data.class_index: filter_classes reports what it drops") {
  const LabelVector labels = (LabelVector(9) << 0, 0, 0, 1, 2, 2, 3, 3, 3).finished();
  const ClassIndex index(labels, 5);
  const ClassFilterReport report = filter_classes(index, 3);
  CHECK(report.kept == std::vector<Label>{0, 3});
  CHECK(report.dropped == std::vector<Label>{1, 2});
  CHECK(report.dropped_counts == std::vector<Index>{1, 2});
  CHECK(report.dropped_rows == 3);
  KSHOT_CHECK_THROWS_WITH_ALL(filter_classes(index, 0), std::invalid_argument, "min_count must be at least 1, got 0");
}

TEST_CASE("data.split: seeded fractional splits are disjoint and reproducible") {
  std::vector<Label> classes(20);
  for (Label c = 0; c < 20; ++c) classes[static_cast<std::size_t>(c)] = c;
  const ClassSplit a = split_classes(classes, 0.5, 0.2, 7);
  const ClassSplit b = split_classes(classes, 0.5, 0.2, 7);
  const ClassSplit c = split_classes(classes, 0.5, 0.2, 8);
  CHECK(a.base.size() == 10);
  CHECK(a.validation.size() == 4);
  CHECK(a.novel.size() == 6);
  CHECK(a.base == b.base);
  CHECK(a.novel == b.novel);
  CHECK(a.base != c.base);
  std::vector<Label> all = a.base;
  all.insert(all.end(), a.validation.begin(), a.validation.end());
  all.insert(all.end(), a.novel.begin(), a.novel.end());
  std::sort(all.begin(), all.end());
  CHECK(all == classes);
  // The caller's order does not matter.
  std::vector<Label> reversed(classes.rbegin(), classes.rend());
  CHECK(split_classes(reversed, 0.5, 0.2, 7).base == a.base);
  KSHOT_CHECK_THROWS_WITH_ALL(split_classes(classes, 0.8, 0.3, 1), std::invalid_argument, "must not exceed 1");
  KSHOT_CHECK_THROWS_WITH_ALL(split_classes(classes, -0.1, 0.3, 1), std::invalid_argument, "base_fraction must be in [0, 1]");
  KSHOT_CHECK_THROWS_WITH_ALL(split_classes({1, 2, 2}, 0.5, 0.2, 1), std::invalid_argument, "class 2 is listed twice");
}

TEST_CASE("data.split: explicit splits are checked and rows_of_classes gathers their rows") {
  const ClassSplit s = make_class_split({0, 1}, {2}, {3, 4}, 5);
  CHECK(s.novel == std::vector<Label>{3, 4});
  KSHOT_CHECK_THROWS_WITH_ALL(make_class_split({0, 1}, {1}, {}, 5), std::invalid_argument, "kshot::make_class_split()",
                              "class 1 is listed in base and again in validation");
  KSHOT_CHECK_THROWS_WITH_ALL(make_class_split({0}, {}, {7}, 5), std::invalid_argument, "novel lists class 7");
  const LabelVector labels = (LabelVector(6) << 3, 0, 4, 3, 1, 4).finished();
  const ClassIndex index(labels);
  CHECK(rows_of_classes(index, s.novel) == std::vector<Index>{0, 2, 3, 5});
}

TEST_CASE("data.dataset: a view binds without a copy and checks its inputs") {
  RowMatrixX<float> features = kshot::test::random_matrix<float>(6, 3, 1);
  const LabelVector labels = (LabelVector(6) << 0, 1, 0, 1, 2, 2).finished();
  const DatasetView<float> view(features, labels);
  CHECK(view.features().data() == features.data());
  CHECK(view.labels().data() == labels.data());
  CHECK(view.size() == 6);
  CHECK(view.dim() == 3);
  CHECK(view.num_classes() == 3);
  CHECK(view.class_index().count(2) == 2);
  const LabelVector short_labels = labels.head(5);
  KSHOT_CHECK_THROWS_WITH_ALL(DatasetView<float>(features, short_labels), std::invalid_argument,
                              "kshot::DatasetView::DatasetView()", "labels has 5 entries but features has 6 rows");
  const RowMatrixX<float> empty(0, 3);
  const LabelVector no_labels(0);
  KSHOT_CHECK_THROWS_WITH_ALL(DatasetView<float>(empty, no_labels), std::invalid_argument, "the dataset is empty");
}

TEST_CASE("data.class_index: an inferred class count is bounded by the labels before allocating (issue 17)") {
  // A label of 2e9 asked for 2e9 + 1 offsets (16 GB) when num_classes was inferred.
  const LabelVector huge = (LabelVector(3) << 0, 2000000000, 1).finished();
  KSHOT_CHECK_THROWS_WITH_ALL(ClassIndex{huge}, std::invalid_argument, "kshot::ClassIndex::ClassIndex()",
                              "the largest label is 2000000000 but there are only 3 labels",
                              "must lie in [0, 3)");
  // The bound is exact: labels below n are accepted, gaps included (class 1 has no row).
  const LabelVector gap = (LabelVector(3) << 0, 2, 2).finished();
  const ClassIndex index(gap);
  CHECK(index.num_classes() == 3);
  CHECK(index.count(1) == 0);
  CHECK(index.count(2) == 2);
  KSHOT_CHECK_THROWS_WITH_ALL(ClassIndex{(LabelVector(2) << 0, 2).finished()}, std::invalid_argument,
                              "the largest label is 2 but there are only 2 labels");
  // An explicit num_classes is the caller's request and still works with sparse labels.
  const ClassIndex wide((LabelVector(2) << 0, 4).finished(), 5);
  CHECK(wide.num_classes() == 5);
  CHECK(wide.count(4) == 1);
}
