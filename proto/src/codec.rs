//! The protobuf codec of every Roster service, client and server: prost,
//! with small per-call buffers.
//!
//! Why: tonic allocates an encode and a decode buffer for every call when it
//! starts, 8 KiB each by default. A leader serving 10,000 keepalive streams
//! would hold about 160 MiB in buffers that carry 20-byte messages. Buffers
//! start at [`BUFFER_BYTES`] here and grow as a message needs (an
//! AppendEntries batch, a large range), so only streams that carry large
//! messages pay for them.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Initial size of a call's encode and decode buffers.
pub const BUFFER_BYTES: usize = 512;
/// tonic's default: a stream yields to the runtime after encoding this much.
const YIELD_THRESHOLD: usize = 32 * 1024;

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_BYTES, YIELD_THRESHOLD)
}

/// Prost encoding with [`BUFFER_BYTES`] buffers; named by the generated
/// code (`codec_path` in build.rs).
#[derive(Debug, Clone)]
pub struct SmallBufferCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SmallBufferCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for SmallBufferCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings())
    }
}
