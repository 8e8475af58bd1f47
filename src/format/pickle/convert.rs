//! Heap → tree conversion (filled in next).
