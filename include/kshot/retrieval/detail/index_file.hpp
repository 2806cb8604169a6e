/**
 * @file kshot/retrieval/detail/index_file.hpp
 * @brief The retrieval index file's magic and version; reading and writing use the checksummed
 * little-endian helpers of kshot/core/binary_io.hpp, shared with the model format.
 *
 * SPDX-License-Identifier: MIT
 */
// IWYU pragma: private, include "kshot/retrieval.hpp"
#ifndef KSHOT_RETRIEVAL_DETAIL_INDEX_FILE_HPP
#define KSHOT_RETRIEVAL_DETAIL_INDEX_FILE_HPP

#include "kshot/core/binary_io.hpp"

#include <cstdint>

namespace kshot {
namespace detail {

/// Magic bytes of a retrieval index file.
inline constexpr char index_file_magic[8] = {'K', 'S', 'H', 'O', 'T', 'I', 'X', '1'};
/// The index file format version written (and the only one read).
inline constexpr std::uint32_t index_file_version = 1;
/// The largest dimension an index file with no item may declare: with no stored vector no byte of the file
/// backs the dimension, and every later add() or search() would be sized by it.
inline constexpr std::uint64_t index_file_max_unbacked_dim = std::uint64_t(1) << 24;

/// Writes an index file (little-endian, checksummed: the format helpers every kshot file shares).
using IndexFileWriter = BinaryWriter;
/// Reads an index file; every failure throws std::runtime_error naming the file and the byte offset.
using IndexFileReader = BinaryReader;

}  // namespace detail
}  // namespace kshot

#endif  // KSHOT_RETRIEVAL_DETAIL_INDEX_FILE_HPP
