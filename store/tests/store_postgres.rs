//! The storage suite against Postgres, each test on its own fresh database.

use std::sync::Arc;

use wxpay_store::{testing, Store};

async fn fresh() -> Arc<dyn Store> {
    Arc::new(
        testing::fresh_pg_store()
            .await
            .expect("fresh Postgres database"),
    )
}

wxpay_store::store_suite!(fresh());
