-- The database every history table lives in (VPP_CLICKHOUSE_DATABASE).
CREATE DATABASE IF NOT EXISTS vpp;
