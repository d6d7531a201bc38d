//! Which usage-topic partition a tenant's events are on, so that exactly one aggregator
//! instance (the one assigned that partition) evaluates the tenant's budgets, including on
//! time ticks when the tenant sends nothing.

/// The partition librdkafka's default partitioner (`consistent_random`: CRC-32 of the key
/// modulo the partition count) puts a record keyed by `tenant` on. The emitter and HTTP
/// ingest key usage events by tenant with that partitioner. `partitions` ≤ 0 gives 0.
pub fn tenant_partition(tenant: &str, partitions: i32) -> i32 {
    if partitions <= 0 {
        return 0;
    }
    let crc = crc32fast::hash(tenant.as_bytes());
    (crc % partitions as u32) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_of_the_key_modulo_partitions() {
        // CRC-32 (IEEE) of "123456789" is the standard check value 0xCBF43926.
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
        assert_eq!(
            tenant_partition("123456789", 4),
            (0xCBF4_3926u32 % 4) as i32
        );
        assert_eq!(tenant_partition("acme", 1), 0);
        assert_eq!(tenant_partition("acme", 0), 0);
    }
}
