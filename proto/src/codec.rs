//! The gRPC codec every `wxpay.v1` stub uses: prost's, with a small starting
//! buffer. tonic's default gives each call an 8 KiB encode buffer that stays
//! allocated for as long as the call does; a `WatchOrder` stream lives for
//! minutes and sends a few messages of ~100 bytes, so on a poller holding a
//! million streams that buffer alone would be 8 GiB. Buffers still grow on
//! demand for a larger message (a page of refunds), so nothing is refused.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::ProstCodec;

/// Enough for every message of the contract but the largest lists, which
/// grow it (bytes). The yield threshold stays tonic's.
const BUFFER: usize = 256;
const YIELD_THRESHOLD: usize = 32 * 1024;

/// [`ProstCodec`] with [`BUFFER`]-byte starting buffers.
#[derive(Debug, Clone, Copy)]
pub struct SmallCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SmallCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for SmallCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as Codec>::Encoder;
    type Decoder = <ProstCodec<T, U> as Codec>::Decoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::new(BUFFER, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(BufferSettings::new(BUFFER, YIELD_THRESHOLD))
    }
}
