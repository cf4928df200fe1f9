-- Revoked device tokens: the durable record behind the Redis set gateway:revoked, which
-- gateways re-load from here on start and whenever Redis restarts (core.revocations).
-- ReplacingMergeTree by jti: revoking a token twice keeps one row.
CREATE TABLE IF NOT EXISTS vpp.revoked_tokens
(
    jti String,
    revoked_at DateTime64(3, 'UTC'),
    revoked_by String
)
ENGINE = ReplacingMergeTree
ORDER BY jti;
