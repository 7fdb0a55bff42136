//! WeChat's keys per merchant against a server playing WeChat and a real
//! database (Postgres and SQLite): certificates are downloaded, opened with
//! the APIv3 key, verified, kept and shared by replicas; an unknown serial
//! refreshes once however many messages ask, and not again within a minute;
//! a rotation is picked up without one failed verification.

mod common;

use std::{sync::Arc, time::Duration};

use common::*;
use wxpay_core::wechat::v3::{models::Transaction, SignedHeaders, VerifyError};
use wxpay_store::{testing, SqliteStore, Store};
use wxpay_wechat_v3::{ClientOptions, KeysOptions, PlatformKeys, V3Error, V3Http};

#[derive(Debug, Clone, Copy)]
enum Backend {
    Postgres,
    Sqlite,
}

/// A fresh database, and a way to open it again as another replica would.
struct Db {
    store: Arc<dyn Store>,
    url: Option<String>,
}

impl Db {
    async fn fresh(backend: Backend) -> Self {
        match backend {
            Backend::Postgres => {
                let url = testing::fresh_database_url().await.expect("database");
                let store = wxpay_store::PgStore::connect(&url, Default::default())
                    .await
                    .expect("postgres");
                Self {
                    store: Arc::new(store),
                    url: Some(url),
                }
            }
            Backend::Sqlite => Self {
                store: Arc::new(SqliteStore::in_memory().await.expect("sqlite")),
                url: None,
            },
        }
    }

    /// The same database through a connection of its own (Postgres), or the
    /// same in-memory database (SQLite, which one process owns).
    async fn replica(&self) -> Arc<dyn Store> {
        match &self.url {
            Some(url) => Arc::new(
                wxpay_store::PgStore::connect(url, Default::default())
                    .await
                    .expect("postgres"),
            ),
            None => self.store.clone(),
        }
    }
}

fn http(base: &str) -> V3Http {
    V3Http::new(
        base,
        ClientOptions {
            backoff: Duration::from_millis(10),
            ..ClientOptions::default()
        },
    )
    .expect("http")
}

async fn start(
    store: Arc<dyn Store>,
    server: &FakeWechat,
    public_key: bool,
    options: KeysOptions,
) -> Arc<PlatformKeys> {
    PlatformKeys::start(
        store,
        http(&server.base()),
        &[merchant(public_key)],
        options,
    )
    .await
    .expect("keys")
}

fn signed<'a>(headers: &'a [(&'static str, String)]) -> SignedHeaders<'a> {
    SignedHeaders::from_fn(|name| {
        headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    })
}

fn serials(keys: &PlatformKeys) -> Vec<String> {
    let mut ids: Vec<String> = keys
        .keys(MCH_ID)
        .expect("merchant")
        .iter()
        .map(|k| k.id().to_owned())
        .collect();
    ids.sort();
    ids
}

fn transaction() -> String {
    r#"{"mchid":"1900000109","out_trade_no":"o-1","trade_state":"NOTPAY","trade_state_desc":""}"#
        .to_owned()
}

const QUERY: &str = "/v3/pay/transactions/out-trade-no/o-1?mchid=1900000109";

async fn certificates_are_downloaded_opened_and_stored(backend: Backend) {
    let db = Db::fresh(backend).await;
    let server = FakeWechat::start(
        SigningKey::cert1(),
        vec![
            (CERT1_SERIAL, cert1_pem()),
            (CERT2_SERIAL, cert2_pem()),
            (EXPIRED_SERIAL, expired_pem()),
        ],
    )
    .await;

    let keys = start(db.store.clone(), &server, false, KeysOptions::default()).await;

    assert_eq!(
        server.certificate_downloads(),
        1,
        "a certificate-mode merchant with none downloads"
    );
    assert!(
        server.seen()[0].authorized,
        "the download is a signed request"
    );
    assert_eq!(
        serials(&keys),
        vec![CERT2_SERIAL.to_owned(), CERT1_SERIAL.to_owned()],
        "every unexpired certificate, the expired one dropped"
    );
    let stored = db
        .store
        .platform_certificates(MCH_ID, chrono::Utc::now())
        .await
        .expect("stored");
    let mut stored: Vec<(String, String)> = stored
        .into_iter()
        .map(|c| (c.serial_no, c.certificate_pem))
        .collect();
    stored.sort();
    assert_eq!(
        stored,
        vec![
            (CERT2_SERIAL.to_owned(), cert2_pem()),
            (CERT1_SERIAL.to_owned(), cert1_pem()),
        ],
        "decrypted certificates are kept as WeChat sealed them"
    );

    // A client over these keys: its answers verify, and it names the
    // certificate valid the longest in Wechatpay-Serial.
    server.push(Scripted::ok(&transaction()));
    let client = keys.client(merchant(false)).expect("client");
    let t: Transaction = client.get(QUERY).await.expect("verified answer");
    assert_eq!(t.trade_state, "NOTPAY");
    let query = server.seen().pop().expect("the query");
    assert_eq!(query.wechatpay_serial.as_deref(), Some(CERT1_SERIAL));
    assert_eq!(keys.preferred_serial(MCH_ID).as_deref(), Some(CERT1_SERIAL));
}

#[tokio::test]
async fn certificates_are_downloaded_opened_and_stored_in_postgres() {
    certificates_are_downloaded_opened_and_stored(Backend::Postgres).await;
}

#[tokio::test]
async fn certificates_are_downloaded_opened_and_stored_in_sqlite() {
    certificates_are_downloaded_opened_and_stored(Backend::Sqlite).await;
}

async fn a_replica_uses_the_stored_certificates_without_calling_wechat(backend: Backend) {
    let db = Db::fresh(backend).await;
    let server = FakeWechat::start(SigningKey::cert1(), vec![(CERT1_SERIAL, cert1_pem())]).await;
    let _first = start(db.store.clone(), &server, false, KeysOptions::default()).await;
    assert_eq!(server.certificate_downloads(), 1);

    let replica = start(db.replica().await, &server, false, KeysOptions::default()).await;
    // And one restarted while WeChat is unreachable.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = format!("http://{}", l.local_addr().expect("addr"));
        drop(l);
        base
    };
    let restarted = PlatformKeys::start(
        db.replica().await,
        http(&dead),
        &[merchant(false)],
        KeysOptions::default(),
    )
    .await
    .expect("starts without WeChat");

    assert_eq!(
        server.certificate_downloads(),
        1,
        "the replica did not download"
    );
    let body = transaction();
    let headers = server.sign_now(body.as_bytes());
    for keys in [&replica, &restarted] {
        assert_eq!(serials(keys), vec![CERT1_SERIAL.to_owned()]);
        keys.verify(MCH_ID, &signed(&headers), body.as_bytes())
            .await
            .expect("verifies with the stored certificate");
    }
}

#[tokio::test]
async fn a_replica_uses_the_stored_certificates_without_calling_wechat_in_postgres() {
    a_replica_uses_the_stored_certificates_without_calling_wechat(Backend::Postgres).await;
}

#[tokio::test]
async fn a_replica_uses_the_stored_certificates_without_calling_wechat_in_sqlite() {
    a_replica_uses_the_stored_certificates_without_calling_wechat(Backend::Sqlite).await;
}

#[tokio::test]
async fn an_unknown_serial_downloads_once_however_many_verifications_race() {
    let db = Db::fresh(Backend::Postgres).await;
    let server = FakeWechat::start(SigningKey::cert2(), vec![(CERT2_SERIAL, cert2_pem())]).await;
    // In public-key mode nothing is downloaded at start.
    let keys = start(db.store.clone(), &server, true, KeysOptions::default()).await;
    assert_eq!(server.certificate_downloads(), 0);
    // Slow enough that all 20 ask while the download is in flight.
    server.delay_certificates(Duration::from_millis(300));

    let messages: Vec<(String, Vec<(&'static str, String)>)> = (0..20)
        .map(|i| {
            let body = format!(r#"{{"n":{i}}}"#);
            let headers = server.sign_now(body.as_bytes());
            (body, headers)
        })
        .collect();
    let results = futures::future::join_all(messages.iter().map(|(body, headers)| {
        let keys = keys.clone();
        async move { keys.verify(MCH_ID, &signed(headers), body.as_bytes()).await }
    }))
    .await;

    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(
        server.certificate_downloads(),
        1,
        "one download for 20 messages"
    );
}

#[tokio::test]
async fn a_second_unknown_serial_within_a_minute_does_not_download_again() {
    let db = Db::fresh(Backend::Sqlite).await;
    let server = FakeWechat::start(SigningKey::cert2(), vec![(CERT2_SERIAL, cert2_pem())]).await;
    let keys = start(db.store.clone(), &server, true, KeysOptions::default()).await;
    let body = transaction();
    keys.verify(
        MCH_ID,
        &signed(&server.sign_now(body.as_bytes())),
        body.as_bytes(),
    )
    .await
    .expect("first unknown serial: refreshed and verified");
    assert_eq!(server.certificate_downloads(), 1);

    // WeChat would now list cert1 too, but the minute has not passed.
    server.list(vec![
        (CERT1_SERIAL, cert1_pem()),
        (CERT2_SERIAL, cert2_pem()),
    ]);
    server.sign_with(SigningKey::cert1());
    let second = keys
        .verify(
            MCH_ID,
            &signed(&server.sign_now(body.as_bytes())),
            body.as_bytes(),
        )
        .await;

    assert_eq!(second, Err(VerifyError::UnknownSerial(CERT1_SERIAL.into())));
    assert_eq!(
        server.certificate_downloads(),
        1,
        "no second download within a minute"
    );
}

#[tokio::test]
async fn probes_and_stale_messages_never_download() {
    let db = Db::fresh(Backend::Sqlite).await;
    let server = FakeWechat::start(SigningKey::cert1(), vec![(CERT1_SERIAL, cert1_pem())]).await;
    let keys = start(db.store.clone(), &server, true, KeysOptions::default()).await;
    let body = transaction();
    let now = chrono::Utc::now().timestamp();

    let mut probe = SigningKey::cert1().headers(body.as_bytes(), now);
    probe[1].1 = format!("WECHATPAY/SIGNTEST/{}", probe[1].1);
    let stale = SigningKey::cert1().headers(body.as_bytes(), now - 600);

    assert_eq!(
        keys.verify(MCH_ID, &signed(&probe), body.as_bytes()).await,
        Err(VerifyError::Probe)
    );
    assert!(matches!(
        keys.verify(MCH_ID, &signed(&stale), body.as_bytes()).await,
        Err(VerifyError::Stale(_))
    ));
    assert_eq!(
        keys.verify_any(&signed(&probe), body.as_bytes()).await,
        Err(VerifyError::Probe)
    );
    assert_eq!(
        server.certificate_downloads(),
        0,
        "refused before any key lookup"
    );

    // The same serial in a genuine message does download: the refusals above
    // were the precheck's, not the limit's.
    let genuine = SigningKey::cert1().headers(body.as_bytes(), now);
    keys.verify(MCH_ID, &signed(&genuine), body.as_bytes())
        .await
        .expect("genuine");
    assert_eq!(server.certificate_downloads(), 1);
}

#[tokio::test]
async fn a_public_key_merchant_switching_to_certificates_accepts_both() {
    let db = Db::fresh(Backend::Postgres).await;
    let server =
        FakeWechat::start(SigningKey::public_key(), vec![(CERT1_SERIAL, cert1_pem())]).await;
    let keys = start(db.store.clone(), &server, true, KeysOptions::default()).await;
    let body = transaction();
    let by_public_key = server.sign_now(body.as_bytes());
    keys.verify(MCH_ID, &signed(&by_public_key), body.as_bytes())
        .await
        .expect("public key");
    assert_eq!(server.certificate_downloads(), 0);

    server.sign_with(SigningKey::cert1());
    let by_certificate = server.sign_now(body.as_bytes());
    keys.verify(MCH_ID, &signed(&by_certificate), body.as_bytes())
        .await
        .expect("certificate, after one download");
    keys.verify(MCH_ID, &signed(&by_public_key), body.as_bytes())
        .await
        .expect("the public key still verifies");

    assert_eq!(server.certificate_downloads(), 1);
    assert_eq!(
        serials(&keys),
        vec![CERT1_SERIAL.to_owned(), PUB_KEY_ID.to_owned()]
    );
    assert_eq!(
        keys.preferred_serial(MCH_ID).as_deref(),
        Some(PUB_KEY_ID),
        "requests keep naming the public key"
    );
}

#[tokio::test]
async fn a_download_that_does_not_verify_is_not_kept() {
    let db = Db::fresh(Backend::Postgres).await;
    // Signed with a certificate it does not list and nobody knows.
    let server = FakeWechat::start(SigningKey::cert2(), vec![(CERT1_SERIAL, cert1_pem())]).await;
    let keys = start(db.store.clone(), &server, false, KeysOptions::default()).await;
    assert_eq!(server.certificate_downloads(), 1);
    assert!(serials(&keys).is_empty(), "nothing kept in memory");

    // Signed by a listed certificate, but over other bytes.
    server.sign_with(SigningKey::cert1());
    server.tamper_certificates(true);
    let refused = keys.refresh_now(MCH_ID).await;

    assert!(
        matches!(
            refused,
            Err(wxpay_wechat_v3::RefreshError::Download(V3Error::Untrusted(
                VerifyError::BadSignature
            )))
        ),
        "{refused:?}"
    );
    assert!(serials(&keys).is_empty());
    assert!(
        db.store
            .platform_certificates(MCH_ID, chrono::Utc::now())
            .await
            .expect("read")
            .is_empty(),
        "nothing stored"
    );
}

#[tokio::test]
async fn a_rotation_announced_in_the_list_is_picked_up_with_no_failed_call() {
    let db = Db::fresh(Backend::Postgres).await;
    let server = FakeWechat::start(SigningKey::cert1(), vec![(CERT1_SERIAL, cert1_pem())]).await;
    let options = KeysOptions {
        refresh_every: Duration::from_millis(300),
        min_refresh_interval: Duration::from_millis(100),
    };
    let keys = start(db.store.clone(), &server, false, options).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let task = keys.spawn_refresh(stop.clone());
    let client = keys.client(merchant(false)).expect("client");
    let call = || async {
        server.push(Scripted::ok(&transaction()));
        client.get::<Transaction>(QUERY).await
    };
    call().await.expect("before the rotation");

    // WeChat lists the next certificate before it signs with it.
    server.list(vec![
        (CERT1_SERIAL, cert1_pem()),
        (CERT2_SERIAL, cert2_pem()),
    ]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !serials(&keys).contains(&CERT2_SERIAL.to_owned()) {
        call().await.expect("during the overlap");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the refresh never picked it up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.sign_with(SigningKey::cert2());
    for _ in 0..5 {
        call().await.expect("after the switch");
    }

    stop.cancel();
    task.await.expect("the refresh task ends");
    let stored: Vec<String> = db
        .store
        .platform_certificates(MCH_ID, chrono::Utc::now())
        .await
        .expect("read")
        .into_iter()
        .map(|c| c.serial_no)
        .collect();
    assert!(stored.contains(&CERT2_SERIAL.to_owned()), "{stored:?}");
}

#[tokio::test]
async fn a_rotation_seen_first_in_an_answer_is_picked_up_by_that_answer() {
    let db = Db::fresh(Backend::Sqlite).await;
    let server = FakeWechat::start(SigningKey::cert1(), vec![(CERT1_SERIAL, cert1_pem())]).await;
    let _first = start(db.store.clone(), &server, false, KeysOptions::default()).await;
    // Restarted from the database: no download, so no attempt this minute.
    let keys = start(db.replica().await, &server, false, KeysOptions::default()).await;
    assert_eq!(server.certificate_downloads(), 1);
    let client = keys.client(merchant(false)).expect("client");

    server.list(vec![
        (CERT1_SERIAL, cert1_pem()),
        (CERT2_SERIAL, cert2_pem()),
    ]);
    server.sign_with(SigningKey::cert2());
    server.push(Scripted::ok(&transaction()));
    let t: Transaction = client
        .get(QUERY)
        .await
        .expect("refreshed and verified once more");

    assert_eq!(t.out_trade_no, "o-1");
    assert_eq!(server.certificate_downloads(), 2);
}

#[tokio::test]
async fn a_notification_is_verified_against_whichever_merchant_holds_its_serial() {
    let db = Db::fresh(Backend::Sqlite).await;
    let server = FakeWechat::start(SigningKey::cert1(), vec![(CERT1_SERIAL, cert1_pem())]).await;
    // Two accounts in public-key mode; only the first one's download succeeds
    // (the fake WeChat knows only MCH_ID).
    let keys = PlatformKeys::start(
        db.store.clone(),
        http(&server.base()),
        &[merchant(true), merchant_with("1900000200", true)],
        KeysOptions::default(),
    )
    .await
    .expect("keys");
    assert_eq!(
        keys.merchants(),
        vec!["1900000109".to_owned(), "1900000200".to_owned()]
    );
    let body = transaction();
    let headers = server.sign_now(body.as_bytes());

    let holders = keys.verify_any(&signed(&headers), body.as_bytes()).await;
    let tampered = keys
        .verify_any(&signed(&headers), format!("{body} ").as_bytes())
        .await;

    assert_eq!(holders, Ok(vec![MCH_ID.to_owned()]));
    assert_eq!(tampered, Err(VerifyError::BadSignature));
    assert_eq!(
        server.certificate_downloads(),
        2,
        "each merchant tried once"
    );
}
