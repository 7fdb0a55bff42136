//! Injected failures: the next N WeChat API calls (v2 or v3) answer
//! SYSTEMERROR (v3: 500 SYSTEM_ERROR), hang past any client timeout (before or
//! after doing what they were asked), or carry a forged signature (v3: a
//! `Wechatpay-Signature` that does not verify); the next N v3 calls answer 429
//! FREQUENCY_LIMITED; the next N refund requests answer NOTENOUGH (v3: 403
//! NOT_ENOUGH); the next N unifiedorder requests answer ORDERPAID; the next N
//! v3 trade bills come with a `hash_value` that is not the file's. Counters
//! only; what each fault does to a reply is decided in `wechat_api`,
//! `v3_api`, `v3_refunds` and `v3_bills`.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// How many of the next API calls get each fault. Also the control API's JSON.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    pub systemerror: u32,
    /// Hang, then drop the connection, before the request touches anything.
    pub timeout: u32,
    /// Do what the request asks, then hang and drop the connection: the outcome
    /// is unknown to the client (the case a reconciler exists for).
    pub process_then_timeout: u32,
    pub bad_signature: u32,
    /// The next v3 calls answer 429 FREQUENCY_LIMITED (v2 calls do not take it).
    pub frequency_limited: u32,
    /// The next refund requests answer NOTENOUGH (the merchant's balance cannot
    /// cover them) and change nothing; other calls do not take this fault.
    pub notenough: u32,
    /// The next unifiedorder requests answer ORDERPAID and change nothing: the
    /// answer WeChat gives for an order it takes as paid while its orderquery
    /// does not show the payment (yet), so a client must not take ORDERPAID
    /// alone as proof. Other calls do not take this fault.
    pub orderpaid: u32,
    /// The next `GET /v3/bill/tradebill` answers that point at a bill give a
    /// `hash_value` that is not the SHA1 of the file served (the file itself
    /// is right): a client must refuse the day. Answers without a bill (no
    /// trades, a refusal) do not take it.
    pub bill_wrong_hash: u32,
}

/// The fault one call gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Timeout,
    ProcessThenTimeout,
    SystemError,
    FrequencyLimited,
    BadSignature,
}

#[derive(Debug, Default)]
pub struct FaultCounters(Mutex<Faults>);

impl FaultCounters {
    /// Replaces the counters (what `POST /sandbox/faults` does).
    pub fn set(&self, faults: Faults) {
        *self.lock() = faults;
    }

    pub fn current(&self) -> Faults {
        *self.lock()
    }

    /// Takes at most one fault for this call, in a fixed order (timeout, then
    /// process-then-timeout, then SYSTEMERROR, then bad signature), so several
    /// armed faults hit successive calls one at a time.
    pub fn take(&self) -> Option<Fault> {
        self.take_one(true, false)
    }

    /// [`Self::take`] for a v3 call, which may also take FREQUENCY_LIMITED
    /// (after SYSTEM_ERROR, before a bad signature).
    pub fn take_v3(&self) -> Option<Fault> {
        self.take_one(true, true)
    }

    /// [`Self::take`] for a call whose answer carries no signature (the daily
    /// bill): a bad-signature fault is left for the next signed call rather than
    /// spent on nothing.
    pub fn take_unsigned(&self) -> Option<Fault> {
        self.take_one(false, false)
    }

    /// [`Self::take_v3`] for a v3 answer that carries no signature (the bill
    /// download): FREQUENCY_LIMITED may be taken, a bad signature is left.
    pub fn take_v3_unsigned(&self) -> Option<Fault> {
        self.take_one(false, true)
    }

    fn take_one(&self, signed: bool, v3: bool) -> Option<Fault> {
        let mut f = self.lock();
        if f.timeout > 0 {
            f.timeout -= 1;
            Some(Fault::Timeout)
        } else if f.process_then_timeout > 0 {
            f.process_then_timeout -= 1;
            Some(Fault::ProcessThenTimeout)
        } else if f.systemerror > 0 {
            f.systemerror -= 1;
            Some(Fault::SystemError)
        } else if v3 && f.frequency_limited > 0 {
            f.frequency_limited -= 1;
            Some(Fault::FrequencyLimited)
        } else if signed && f.bad_signature > 0 {
            f.bad_signature -= 1;
            Some(Fault::BadSignature)
        } else {
            None
        }
    }

    /// Takes a NOTENOUGH fault for a refund request, if one is armed.
    pub fn take_notenough(&self) -> bool {
        let mut f = self.lock();
        if f.notenough > 0 {
            f.notenough -= 1;
            true
        } else {
            false
        }
    }

    /// Takes an ORDERPAID fault for a unifiedorder request, if one is armed.
    pub fn take_orderpaid(&self) -> bool {
        let mut f = self.lock();
        if f.orderpaid > 0 {
            f.orderpaid -= 1;
            true
        } else {
            false
        }
    }

    /// Takes a wrong-hash fault for a trade bill answer, if one is armed.
    pub fn take_bill_wrong_hash(&self) -> bool {
        let mut f = self.lock();
        if f.bill_wrong_hash > 0 {
            f.bill_wrong_hash -= 1;
            true
        } else {
            false
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Faults> {
        // The counters are plain numbers, valid whatever a panicking holder did.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_call_takes_one_fault_until_none_is_left() {
        let c = FaultCounters::default();
        c.set(Faults {
            systemerror: 2,
            timeout: 1,
            process_then_timeout: 1,
            bad_signature: 1,
            ..Faults::default()
        });
        let taken: Vec<_> = std::iter::from_fn(|| c.take()).collect();
        assert_eq!(
            taken,
            [
                Fault::Timeout,
                Fault::ProcessThenTimeout,
                Fault::SystemError,
                Fault::SystemError,
                Fault::BadSignature
            ]
        );
        assert_eq!(c.current(), Faults::default());
    }

    #[test]
    fn an_unsigned_call_leaves_the_bad_signature_for_the_next_signed_one() {
        let c = FaultCounters::default();
        c.set(Faults {
            bad_signature: 1,
            ..Faults::default()
        });
        assert_eq!(c.take_unsigned(), None);
        assert_eq!(c.take(), Some(Fault::BadSignature));
    }

    #[test]
    fn frequency_limited_is_for_v3_calls_only() {
        let c = FaultCounters::default();
        c.set(Faults {
            frequency_limited: 1,
            bad_signature: 1,
            ..Faults::default()
        });
        assert_eq!(c.take(), Some(Fault::BadSignature));
        assert_eq!(c.take(), None);
        assert_eq!(c.take_v3(), Some(Fault::FrequencyLimited));
        assert_eq!(c.current(), Faults::default());
    }
}
