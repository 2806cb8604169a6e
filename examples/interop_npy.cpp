// SPDX-License-Identifier: MIT
/**
 * @file examples/interop_npy.cpp
 * @brief The usage example of docs/interop.md, compiled: xtensor data into kshot without a copy, a kshot
 * result back as an xtensor, and .npy/.csv files shared with NumPy. Needs xtensor (link kshot::xtensor).
 */
#include <kshot/data/csv.hpp>
#include <kshot/data/npy.hpp>
#include <kshot/distances.hpp>
#include <kshot/interop.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

int main() {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / "kshot_interop_example";
  std::filesystem::create_directories(dir);

  // --- 1. The bridge: xtensor -> Eigen, no copy
  // Three product embeddings (rows) and their categories, as a feature pipeline might hand them over.
  xt::xtensor<float, 2> products = {{1.f, 0.f}, {0.f, 2.f}, {3.f, 4.f}};
  xt::xtensor<kshot::Label, 1> categories = {0, 1, 1};

  // An Eigen::Map<RowMatrixX<float>> over the memory of `products`; the label map binds to ConstLabelRef.
  auto embeddings = kshot::as_eigen(products);
  const kshot::ConstLabelRef labels = kshot::as_eigen(categories);
  // Any kshot API that takes Eigen::Ref or Eigen::MatrixBase accepts the map.
  const kshot::RowMatrixX<float> d = kshot::self_distances(embeddings);

  // xarray and xt::adapt results are checked at run time (2-D, row-major); views need xt::eval() first.
  xt::xarray<double> dynamic = {{1.0, 2.0}, {3.0, 4.0}};
  const auto dynamic_map = kshot::as_eigen(dynamic);  // Eigen::Map<RowMatrixX<double>>

  // --- 2. The bridge: Eigen -> xtensor, no copy
  auto d_view = kshot::to_xtensor_view(d);  // const RowMatrixX -> read-only xt::xtensor_adaptor, 3 x 3
  const float farthest = *std::max_element(d_view.begin(), d_view.end());

  // --- 3. .npy files, interchangeable with NumPy (np.load / np.save)
  const std::string embeddings_path = (dir / "embeddings.npy").string();
  const std::string labels_path = (dir / "labels.npy").string();
  kshot::save_npy(embeddings_path, embeddings);  // float32 '<f4', shape (3, 2); written to .tmp, then renamed
  kshot::save_npy(labels_path, labels);          // int32 '<i4', shape (3,)
  const kshot::RowMatrixX<float> loaded = kshot::load_npy_matrix<float>(embeddings_path);
  const kshot::LabelVector loaded_labels = kshot::load_npy_labels(labels_path);  // int8..int64, uint8..uint64

  // A float32 file read as double: refused unless the conversion is asked for.
  try {
    kshot::load_npy_matrix<double>(embeddings_path);
  } catch (const std::runtime_error& e) {
    std::printf("refused: %s\n", e.what());
  }
  const kshot::RowMatrixX<double> widened = kshot::load_npy_matrix<double>(embeddings_path, kshot::NpyConvert::dtype);

  // --- 4. CSV: one sample per line, a header line skipped
  const std::string csv_path = (dir / "features.csv").string();
  std::ofstream(csv_path) << "f0,f1\n0.5,1.5\n-2,4e-3\n";
  const kshot::RowMatrixX<float> features = kshot::load_csv_matrix<float>(csv_path, ',', /*skip_rows=*/1);

  std::printf("squared distance between products 1 and 2: %.1f (largest %.1f)\n", double(d(1, 2)), double(farthest));
  std::printf("xarray entry (1, 0) through the map: %.1f\n", dynamic_map(1, 0));
  std::printf("loaded %ld x %ld embeddings, labels %d %d %d; widened (2, 1) = %.1f\n", long(loaded.rows()),
              long(loaded.cols()), loaded_labels[0], loaded_labels[1], loaded_labels[2], widened(2, 1));
  std::printf("csv: %ld x %ld, (1, 1) = %.3f\n", long(features.rows()), long(features.cols()), double(features(1, 1)));

  std::filesystem::remove_all(dir);
  return 0;
}
