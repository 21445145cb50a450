"""OAuth2 access tokens for SMTP and IMAP logins: providers, a shared cache, refresh ahead of expiry.

:func:`token_source` turns an :class:`~smtp_probe.oauth.settings.OAuthClient`
into a :class:`~smtp_probe.probe.credentials.TokenSource`. The provider
libraries (msal, google-auth, authlib) are imported only when a token is
first needed.
"""
