-- Auth's tables. Every tenant-owned row carries tenant_id and every query filters by it.

create table tenants (
  id         uuid        primary key,
  name       text        not null,
  created_at timestamptz not null default now()
);

-- One account per email address (stored lower-cased); it may belong to several tenants.
create table users (
  id                  uuid        primary key,
  email               text        not null unique,
  password_hash       text        not null,
  -- Sealed (see secrets.ts) base32 TOTP secret while MFA is on.
  totp_secret         text,
  -- Sealed secret between EnrollTotp and ConfirmTotp.
  totp_pending_secret text,
  -- Last accepted TOTP time step: a code is accepted only for a later step (no replay).
  totp_last_step      bigint,
  created_at          timestamptz not null default now()
);

create table memberships (
  -- Page cursor for ListMembers (oldest first).
  seq       bigserial   not null unique,
  tenant_id uuid        not null references tenants (id),
  user_id   uuid        not null references users (id),
  joined_at timestamptz not null default now(),
  primary key (tenant_id, user_id)
);
create index memberships_user_idx on memberships (user_id, seq);

-- Custom roles; the built-in ones live in code (permissions.ts) and are never rows.
create table custom_roles (
  tenant_id   uuid        not null references tenants (id),
  name        text        not null,
  permissions text[]      not null,
  created_by  uuid        not null,
  created_at  timestamptz not null default now(),
  primary key (tenant_id, name)
);

create table member_roles (
  tenant_id  uuid        not null,
  user_id    uuid        not null,
  role       text        not null,
  granted_at timestamptz not null default now(),
  primary key (tenant_id, user_id, role),
  foreign key (tenant_id, user_id) references memberships (tenant_id, user_id) on delete cascade
);
create index member_roles_role_idx on member_roles (tenant_id, role);

create table sessions (
  id                uuid        primary key,
  tenant_id         uuid        not null,
  user_id           uuid        not null,
  user_agent        text        not null default '',
  ip_address        text        not null default '',
  mfa_used          boolean     not null default false,
  created_at        timestamptz not null default now(),
  last_used_at      timestamptz not null default now(),
  -- When the current refresh token expires (slides on every refresh, capped by max_expires_at).
  expires_at        timestamptz not null,
  max_expires_at    timestamptz not null,
  -- Latest expiry of any access token issued for the session (SessionRevoked carries it).
  access_expires_at timestamptz not null,
  revoked_at        timestamptz,
  revoke_reason     smallint,
  foreign key (tenant_id, user_id) references memberships (tenant_id, user_id)
);
create index sessions_user_idx on sessions (tenant_id, user_id, created_at desc) where revoked_at is null;

-- Refresh tokens by SHA-256; spent ones stay until the session ends so reuse is recognised.
create table refresh_tokens (
  token_hash bytea       primary key,
  session_id uuid        not null references sessions (id) on delete cascade,
  created_at timestamptz not null default now(),
  expires_at timestamptz not null,
  used_at    timestamptz
);
create index refresh_tokens_session_idx on refresh_tokens (session_id);

create table recovery_codes (
  user_id   uuid        not null references users (id) on delete cascade,
  code_hash bytea       not null,
  used_at   timestamptz,
  primary key (user_id, code_hash)
);

create table invites (
  id          uuid        primary key,
  tenant_id   uuid        not null references tenants (id),
  email       text        not null,
  roles       text[]      not null,
  token_hash  bytea       not null unique,
  invited_by  uuid        not null,
  created_at  timestamptz not null default now(),
  expires_at  timestamptz not null,
  accepted_at timestamptz,
  accepted_by uuid
);
create index invites_tenant_idx on invites (tenant_id, email);

-- Failed sign-in counters, keyed by a hash of the account's email or of the client address.
create table login_throttle (
  key             text        primary key,
  failures        integer     not null,
  last_failure_at timestamptz not null,
  locked_until    timestamptz
);

-- Token signing keys. The private key is a JWK, sealed with AUTH_ENCRYPTION_KEY when one is set.
create table signing_keys (
  kid           text        primary key,
  alg           text        not null,
  public_jwk    jsonb       not null,
  private_key   text        not null,
  created_at    timestamptz not null,
  -- When the key starts signing: a new key is published this long before it signs, so every
  -- instance and every JWKS cache knows it first.
  activates_at  timestamptz not null,
  -- When a newer key took over signing; the public key stays published for one access-token
  -- lifetime plus a margin after it.
  superseded_at timestamptz
);
