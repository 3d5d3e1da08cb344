-- expect: require-concurrent-index-creation
create unique index
    users_email_key
on "Users"
    (lower(email));
