// CRC-32C (Castagnoli, polynomial 0x1EDC6F41, reflected 0x82F63B78), written for this project:
// it protects the journal's records, so that recovery tells a whole record from a torn one.
#pragma once
#include <cstddef>
#include <cstdint>

// The CRC-32C of `n` bytes at `data`, continuing from `crc` (0 to start): crc32c(0, "123456789", 9)
// is 0xE3069283. Uses the SSE4.2 CRC32 instruction where the CPU has it, else tables.
uint32_t crc32c(uint32_t crc, const void* data, size_t n);

// For tests: use the instruction (when available) or the tables; returns whether the
// instruction is now in use. Not thread-safe: call before any other thread hashes.
bool crc32c_use_hardware(bool use);
bool crc32c_hardware_available();
